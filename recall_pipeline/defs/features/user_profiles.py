"""``user_profiles``: what each user likes, as a history vector, a readable interest text
encoded by the LM, and up to four interest vectors."""

import dagster as dg
import numpy as np
import polars as pl

from recall_pipeline.core.features.user_profiles import (
    ProfileSettings, build_user_profiles, interest_texts, multi_interests,
)
from recall_pipeline.defs.config import config_from
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.tables import item_vectors
from recall_pipeline.resources import DataSource, TextEncoderResource, Warehouse


# rating_max comes from the data source, which knows the rating scale
ProfileConfig = config_from(ProfileSettings, "ProfileConfig", "How history is weighted and summarised "
                            "(see recall_pipeline.core.features.user_profiles).", exclude=("rating_max",))


@dg.asset(
    group_name="features",
    deps=["rating_matrix", "item_embeddings"],
    kinds={"duckdb", "pytorch"},
    pool="warehouse",
    description="Per user with training history (DuckDB features.user_profiles): the rating- and "
                "recency-weighted mean of their training items' embeddings with disliked items "
                "weighted down (embedding); a readable interest text (profile_text: most liked "
                "genres, recently liked titles) and its LM encoding (interest_embedding). Up to 4 "
                "interest centroids per user with weights in features.user_interests. Users "
                "without training history get no profile (served by the popularity fallback).",
)
def user_profiles(context: dg.AssetExecutionContext, config: ProfileConfig, data_source: DataSource,
                  encoder: TextEncoderResource, warehouse: Warehouse) -> dg.MaterializeResult:
    settings = ProfileSettings(rating_max=data_source.rating_max, **config.model_dump())
    train = warehouse.query("select user_id, item_id, rating, timestamp "
                            "from features.interactions_split where part = 'train'")
    items = warehouse.query("select item_id, title, year, genres from clean.items")
    all_users = warehouse.scalar("select count(*) from features.user_index")
    ids, vectors, model = item_vectors(warehouse)
    history = build_user_profiles(train, ids, vectors, settings)
    texts = interest_texts(train, items, settings)
    interest_vectors = encoder.get().encode(texts["profile_text"].to_list())
    interests = multi_interests(train, ids, vectors, settings)
    profiles = pl.DataFrame({"user_id": history.user_ids, "history_size": history.history_sizes,
                             "model": model, "embedding": history.vectors}).join(
        texts.with_columns(pl.Series("interest_embedding", interest_vectors)), on="user_id", how="left")
    warehouse.replace_table("features.user_profiles", profiles)
    warehouse.replace_table("features.user_interests", interests)
    without = all_users - len(history.user_ids)
    per_user = interests.group_by("user_id").len()["len"]
    context.log.info(f"{len(history.user_ids)} profiles; {without} users without training history")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(history.user_ids),
        "users_without_history": without,
        "median_history": float(np.median(history.history_sizes)) if len(history.user_ids) else 0.0,
        "interests_per_user": markdown_table(per_user.value_counts().sort(per_user.name)),
        "model": model,
        "preview": markdown_table(profiles.select("user_id", "history_size", "profile_text")),
    })
