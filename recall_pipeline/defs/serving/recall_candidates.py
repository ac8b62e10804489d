"""``recall_candidates``: multi-route recall lists per user in DuckDB, appended per run."""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from recall_pipeline.core.serving import recall_tables
from recall_pipeline.core.serving.index import read_index
from recall_pipeline.core.serving.routes import ROUTES, ModelRoute, RouteSettings, merge_routes, route_lists
from recall_pipeline.defs import tables
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.tables import interest_vectors, item_vectors, rating_matrix
from recall_pipeline.resources import PipelineHome, Warehouse

COVERAGE_CHECK = "every_user_has_candidates"
NO_TRAIN_CHECK = "no_training_item_recalled"
DEFAULT_WEIGHTS = RouteSettings().weights


class RecallConfig(dg.Config):
    """List length, route depth, fusion weights, popularity discount and MMR diversity (defaults
    chosen on the validation cut with bench/tune_fusion.py)."""

    k: int = 100
    depth: int = RouteSettings.depth
    weight_two_tower: float = DEFAULT_WEIGHTS["two_tower"]
    weight_ease: float = DEFAULT_WEIGHTS["ease"]
    weight_lm_profile: float = DEFAULT_WEIGHTS["lm_profile"]
    weight_lm_interest: float = DEFAULT_WEIGHTS["lm_interest"]
    weight_popularity: float = DEFAULT_WEIGHTS["popularity"]
    popularity_discount: float = RouteSettings.popularity_discount
    mmr_lambda: float = RouteSettings.mmr_lambda
    ease_lambda: float = RouteSettings.ease_lambda

    def settings(self) -> RouteSettings:
        weights = {name: getattr(self, f"weight_{name}") for name in ROUTES}
        return RouteSettings(depth=self.depth, weights=weights, mmr_lambda=self.mmr_lambda,
                             popularity_discount=self.popularity_discount,
                             ease_lambda=self.ease_lambda, mmr_pool=max(2 * self.k, self.depth))


@dg.asset(
    group_name="serving",
    deps=["faiss_index", "two_tower_index", "user_profiles", "rating_matrix"],
    kinds={"duckdb", "faiss"},
    pool="warehouse",
    check_specs=[
        dg.AssetCheckSpec(COVERAGE_CHECK, asset="recall_candidates", blocking=True,
                          description="every user gets min(K, items not in their training) candidates"),
        dg.AssetCheckSpec(NO_TRAIN_CHECK, asset="recall_candidates", blocking=True,
                          description="no user is recalled an item of their own training history"),
    ],
    description="Top-K recall candidates per user (default 100) from five routes: the two-tower "
                "model (serving version, default the MLflow champion) in the FAISS index of its "
                "item-tower outputs, the LM history profile in the FAISS index of LM embeddings, the LM interest vectors, EASE item-to-item CF, and "
                "popularity for users without history; merged by weighted reciprocal-rank fusion "
                "with a popularity discount (fused score x (1 + training count)^-discount) and "
                "re-ranked by MMR. Appended to DuckDB recall.candidates per run with each "
                "route's rank of the item (rank_<route>, null: not proposed); once its checks "
                "pass the run is published and the view recall.latest shows it.",
)
def recall_candidates(context: dg.AssetExecutionContext, config: RecallConfig,
                      warehouse: Warehouse, home: PipelineHome):
    ids, vectors, model = item_vectors(warehouse)
    index, manifest = read_index(home.layout.indexes / "items", model, ids, vectors)
    rm = rating_matrix(home)
    profiles = warehouse.query("select user_id, embedding from features.user_profiles order by user_id")
    interest_users, interests = interest_vectors(warehouse)
    settings = config.settings()
    model_route, model_key = _two_tower_route(warehouse, home, rm, ids, vectors, model)
    lists = route_lists(index, ids, rm, profiles["user_id"].to_numpy(),
                        np.ascontiguousarray(profiles["embedding"].to_numpy(), dtype=np.float32),
                        interest_users, interests, settings, model_route)
    merged = merge_routes(lists, vectors, config.k, settings, train_counts=np.diff(rm.matrix.tocsc().indptr))
    run_id = context.run.run_id
    frame = recall_tables.candidates_frame(rm, merged).select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(f"{model_key}+{model}").alias("model_version"),
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
    shares = frame.group_by("route").len().sort("route")
    context.log.info(f"{frame.height} candidates for {len(rm.user_ids)} users; routes {shares.rows()}")
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": frame.height,
        "users": len(rm.user_ids),
        "published": published,
        "k": config.k,
        "index_type": manifest.index_type,
        "distinct_items": frame["item_id"].n_unique(),
        "route_shares": markdown_table(shares),
        "preview": markdown_table(frame.select("user_id", "rank", "item_id", "score", "route",
                                               *[f"rank_{n}" for n in ROUTES])),
    })


def _two_tower_route(warehouse: Warehouse, home: PipelineHome, rm, ids, lm_vectors, encoder: str
                     ) -> tuple[ModelRoute, str]:
    """The serving two-tower model's user vectors (from each user's latest training history)
    and its index; the model version key names it in every candidate row."""
    from recall_pipeline.core.training import recall_model as training

    from recall_pipeline.core.training import two_tower

    model, index, manifest = tables.two_tower_index(home.layout.indexes / "two_tower", ids, lm_vectors, encoder)
    split = warehouse.query("select user_id, item_id, rating, timestamp, part from features.interactions_split "
                            "where part = 'train'")
    rows, history, ratings = training.training_sequences(split, rm).last_windows(model.architecture.history_length)
    return ModelRoute(index, rows, two_tower.user_vectors(model, history, ratings)), manifest.model
