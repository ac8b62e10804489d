"""``user_profiles``: what each user likes, as a history vector, a readable interest text
encoded by the LM, and up to four interest vectors."""

import dagster as dg
import numpy as np
import polars as pl

from recall_pipeline.core.features import changed_users
from recall_pipeline.core.features.user_profiles import ProfileSettings, profile_tables
from recall_pipeline.defs.config import config_from
from recall_pipeline.defs.jobs import FEEDBACK_JOB
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.tables import item_texts, item_vectors
from recall_pipeline.defs.sentences import keep_sentences, reusing_encoder
from recall_pipeline.resources import DataSource, PipelineHome, TextEncoderResource, Warehouse


# rating_max comes from the data source, which knows the rating scale
ProfileConfig = config_from(ProfileSettings, "ProfileConfig", "How history is weighted and summarised "
                            "(see recall_pipeline.core.features.user_profiles); recompute: 'all' users, "
                            "'changed': only those whose training history changed, 'auto': changed in "
                            "feedback_refresh_job, else all; interest_text_when_changed: 'reuse' (the "
                            "rebuilt profiles keep their interest text and its encoding until the next "
                            "full refresh: the LM is not loaded) or 'encode'.",
                            exclude=("rating_max",), recompute=(str, changed_users.AUTO),
                            interest_text_when_changed=(str, "reuse"))


@dg.asset(
    group_name="features",
    deps=["rating_matrix", "item_embeddings"],
    kinds={"duckdb", "pytorch"},
    pool="warehouse",
    description="Per user with training history (DuckDB features.user_profiles): the rating- and "
                "recency-weighted mean of their training items' embeddings with disliked items "
                "weighted down (embedding); a readable interest text (profile_text: most liked "
                "genres, recently liked titles) and its LM encoding (interest_embedding); the hash "
                "of the training history it was built from (history_hash). Up to 4 interest "
                "centroids per user with weights in features.user_interests. Users without training "
                "history get no profile (served by the popularity fallback). A feedback refresh "
                "rebuilds only the profiles whose history changed.",
)
def user_profiles(context: dg.AssetExecutionContext, config: ProfileConfig, data_source: DataSource,
                  encoder: TextEncoderResource, warehouse: Warehouse, home: PipelineHome) -> dg.MaterializeResult:
    settings = ProfileSettings(rating_max=data_source.rating_max,
                               **config.model_dump(exclude={"recompute", "interest_text_when_changed"}))
    with warehouse.connect() as con:
        digests = changed_users.history_digests(con)
        changed_only = changed_users.recompute_mode(config.recompute, context.job_name == FEEDBACK_JOB)
        users = changed_users.profiles_to_recompute(con) if changed_only else None
        reuse = users is not None and config.interest_text_when_changed == "reuse"
        previous = changed_users.stored_interest_texts(con, users) if reuse else None
    train = warehouse.query("select user_id, item_id, rating, timestamp "
                            "from features.interactions_split where part = 'train'")
    train = train if users is None else train.filter(pl.col("user_id").is_in(users))
    items = item_texts(warehouse)
    ids, vectors, model = item_vectors(warehouse)
    encode = None if reuse else reusing_encoder(encoder, home, "user_profiles")
    profiles, interests = profile_tables(train, items, ids, vectors, model, encode, settings, previous)
    # every user's sentence after a full refresh (a changed-only one looks its sentences up, keeps the file)
    sentences = keep_sentences(context, encode) if encode is not None and users is None else {}
    profiles = profiles.join(digests.select("user_id", "history_hash"), on="user_id", how="left")
    if users is None:
        warehouse.replace_tables({"features.user_profiles": profiles, "features.user_interests": interests})
    else:  # one transaction: the changed users' rows, and none of users who lost their history
        with warehouse.connect() as con:
            changed_users.replace_profiles_of(con, users, profiles, interests)
    total = warehouse.scalar("select count(*) from features.user_profiles")
    without = int((digests["train_rows"] == 0).sum())
    context.log.info(f"{profiles.height} profiles built ({'every user' if users is None else 'history changed'}), "
                     f"{total} in all; {without} users without training history")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": total, "profiles_built": profiles.height, "users_without_history": without,
        "interest_text": "kept from the previous profile until the next full refresh" if reuse else "encoded",
        **sentences,
        "median_history": float(np.median(profiles["history_size"])) if profiles.height else 0.0,
        "interests_per_user": markdown_table(interests.group_by("user_id").len()["len"].value_counts().sort("len")),
        "model": model,
        "preview": markdown_table(profiles.select("user_id", "history_size", "profile_text")),
    })
