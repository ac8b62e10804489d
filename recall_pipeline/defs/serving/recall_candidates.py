"""``recall_candidates``: top-K recall lists per user in DuckDB, appended per run."""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from recall_pipeline.core import recall_tables
from recall_pipeline.core.candidates import candidates_frame, recall_lists
from recall_pipeline.core.index import read_index
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.tables import item_vectors, rating_matrix
from recall_pipeline.resources import PipelineHome, Warehouse

COVERAGE_CHECK = "every_user_has_candidates"
NO_TRAIN_CHECK = "no_training_item_recalled"

class RecallConfig(dg.Config):
    """How many candidates each user gets."""

    k: int = 100


@dg.asset(
    group_name="serving",
    deps=["faiss_index", "user_profiles", "rating_matrix"],
    kinds={"duckdb", "faiss"},
    pool="warehouse",
    check_specs=[
        dg.AssetCheckSpec(COVERAGE_CHECK, asset="recall_candidates", blocking=True,
                          description="every user gets min(K, items not in their training) candidates"),
        dg.AssetCheckSpec(NO_TRAIN_CHECK, asset="recall_candidates", blocking=True,
                          description="no user is recalled an item of their own training history"),
    ],
    description="Top-K recall candidates per user (default 100): the user profile searched in "
                "the FAISS index with the user's training items excluded; users without "
                "history get the most popular items. Appended to DuckDB recall.candidates per "
                "run (run_id, model_version, user_id, rank, item_id, score, route); once its "
                "checks pass the run is published and the view recall.latest shows it.",
)
def recall_candidates(context: dg.AssetExecutionContext, config: RecallConfig,
                      warehouse: Warehouse, home: PipelineHome):
    ids, vectors, model = item_vectors(warehouse)
    index, manifest = read_index(home.layout.indexes / "items", model, ids, vectors)
    rm = rating_matrix(home)
    profiles = warehouse.query("select user_id, embedding from features.user_profiles order by user_id")
    items, scores, route = recall_lists(index, ids, rm, profiles["user_id"].to_numpy(),
                                        profiles["embedding"].to_numpy().astype(np.float32), config.k)
    run_id = context.run.run_id
    frame = candidates_frame(rm, items, scores, route).select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(f"lm_profile:{model}").alias("model_version"),
        pl.all(),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("created_at"),
    )
    if warehouse.has_table("recall.candidates"):  # a retried run replaces its own rows
        with warehouse.connect() as con:
            con.execute("delete from recall.candidates where run_id = ?", [run_id])
    warehouse.append_table("recall.candidates", frame)
    with warehouse.connect() as con:
        short = recall_tables.users_short_of_candidates(con, run_id, config.k)
        leaked = recall_tables.training_items_recalled(con, run_id)
        published = short == 0 and leaked == 0
        if published:  # only checked lists become what users query
            recall_tables.publish_run(con, run_id)
    yield dg.AssetCheckResult(check_name=COVERAGE_CHECK, passed=short == 0, metadata={"users_short": short})
    yield dg.AssetCheckResult(check_name=NO_TRAIN_CHECK, passed=leaked == 0,
                              metadata={"training_items_recalled": leaked})
    context.log.info(f"{frame.height} candidates for {len(rm.user_ids)} users")
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": frame.height,
        "users": len(rm.user_ids),
        "published": published,
        "users_served_by_popularity": int((route == "popularity").sum()),
        "k": config.k,
        "index_type": manifest.index_type,
        "distinct_items": frame["item_id"].n_unique(),
        "preview": markdown_table(frame.select("user_id", "rank", "item_id", "score", "route")),
    })
