"""``user_profiles``: each user's interest vector from their training history."""

import dagster as dg
import numpy as np
import polars as pl

from recall_pipeline.core.profiles import build_user_profiles
from recall_pipeline.defs.tables import item_vectors
from recall_pipeline.resources import DataSource, Warehouse


class ProfileConfig(dg.Config):
    """How history is weighted: recent and well-rated items count most."""

    half_life_days: float = 365.0


@dg.asset(
    group_name="features",
    deps=["rating_matrix", "item_embeddings"],
    kinds={"duckdb", "numpy"},
    pool="warehouse",
    description="Per user with training history: the rating- and recency-weighted mean of "
                "their training items' embeddings, L2-normalised. Users without training "
                "history get no vector (served by the popularity fallback). DuckDB table "
                "features.user_profiles.",
)
def user_profiles(context: dg.AssetExecutionContext, config: ProfileConfig,
                  data_source: DataSource, warehouse: Warehouse) -> dg.MaterializeResult:
    train = warehouse.query("select user_id, item_id, rating, timestamp "
                            "from features.interactions_split where part = 'train'")
    all_users = warehouse.scalar("select count(*) from features.user_index")
    ids, vectors, model = item_vectors(warehouse)
    profiles = build_user_profiles(train, ids, vectors, data_source.rating_max, config.half_life_days)
    warehouse.replace_table("features.user_profiles", pl.DataFrame({
        "user_id": profiles.user_ids,
        "history_size": profiles.history_sizes,
        "model": model,
        "embedding": profiles.vectors,
    }))
    without = all_users - len(profiles.user_ids)
    context.log.info(f"{len(profiles.user_ids)} profiles; {without} users without training history")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(profiles.user_ids),
        "users_without_history": without,
        "median_history": float(np.median(profiles.history_sizes)) if len(profiles.user_ids) else 0.0,
        "model": model,
    })
