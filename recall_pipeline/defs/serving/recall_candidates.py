"""``recall_candidates``: multi-route recall lists per user in DuckDB, appended per run."""

import dagster as dg

from recall_pipeline.core.serving import recall_candidates as candidates
from recall_pipeline.core.features import changed_users
from recall_pipeline.core.serving import incremental, recall_tables
from recall_pipeline.core.serving.routes import ROUTES, RouteSettings
from recall_pipeline.defs import tables
from recall_pipeline.defs.jobs import FEEDBACK_JOB
from recall_pipeline.defs.metadata import markdown_table
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
    ease_max_items: int = RouteSettings.ease_max_items
    # "auto": in feedback_refresh_job only the users whose history changed ("changed"), else "all"
    recompute: str = changed_users.AUTO

    def settings(self) -> RouteSettings:
        weights = {name: getattr(self, f"weight_{name}") for name in ROUTES}
        return RouteSettings(depth=self.depth, weights=weights, mmr_lambda=self.mmr_lambda,
                             popularity_discount=self.popularity_discount,
                             ease_lambda=self.ease_lambda, ease_max_items=self.ease_max_items,
                             mmr_pool=max(2 * self.k, self.depth))


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
    run_id, settings, model_version = context.run.run_id, config.settings(), tables.serving_model_version(warehouse, home)
    changed_only = changed_users.recompute_mode(config.recompute, context.job_name == FEEDBACK_JOB)
    with warehouse.connect() as con:  # which users to compute (a feedback refresh: whose history changed)
        plan = incremental.plan_run(con, run_id, changed_only, home.layout.ease_model, model_version,
                                    settings, config.k)
    context.log.info(plan.reason)
    inputs = tables.recall_inputs(warehouse, home, plan.users)
    merged = candidates.recall(inputs, settings, config.k,
                               candidates.ease_scorer(inputs, settings, plan.ease, home.layout.ease_model, run_id))
    frame = candidates.candidates_table(inputs, merged, run_id)
    with warehouse.connect() as con:  # one transaction; only checked lists become what users query
        stored = incremental.store_run(con, run_id, frame, plan)
        short, leaked, published = recall_tables.check_and_publish(con, run_id, config.k)
    yield dg.AssetCheckResult(check_name=COVERAGE_CHECK, passed=short == 0, metadata={"users_short": short})
    yield dg.AssetCheckResult(check_name=NO_TRAIN_CHECK, passed=leaked == 0,
                              metadata={"training_items_recalled": leaked})
    shares = frame.group_by("route").len().sort("route")
    context.log.info(f"{frame.height} candidates computed for {stored.recomputed_users} users, "
                     f"{stored.copied_users} users' lists copied from {plan.previous_run}; routes {shares.rows()}")
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": stored.rows,
        "users": stored.recomputed_users + stored.copied_users,
        "users_recomputed": stored.recomputed_users, "users_copied": stored.copied_users,
        "copied_from": plan.previous_run or "none", "recompute_reason": plan.reason,
        "published": published,
        "k": config.k,
        "index_type": inputs.lm_index_type,
        "distinct_items": frame["item_id"].n_unique(),
        "route_shares": markdown_table(shares),
        "preview": markdown_table(frame.select("user_id", "rank", "item_id", "score", "route",
                                               *[f"rank_{n}" for n in ROUTES])),
    })
