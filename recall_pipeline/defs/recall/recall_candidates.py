"""``recall_candidates``: multi-route recall lists per user in DuckDB, appended per run.

Three steps: ``plan`` (reads the warehouse and both published indexes, checks them, and exports
what the shards read to the shard location, with the users to compute and their shard),
``recall`` (one per shard, on any worker: no warehouse), ``merge`` (the single writer: the
shards' rows into ``recall.candidates``, the checks, publishing).
"""

import dataclasses
from pathlib import Path

import dagster as dg

from recall_pipeline.core.features import changed_users
from recall_pipeline.core.recall import incremental, published_tables, recall_shards, serving_version
from recall_pipeline.core.recall.serving_version import ServingParts
from recall_pipeline.core.recall.chosen_settings import load_choice
from recall_pipeline.core.recall import recall_candidates as candidates
from recall_pipeline.core.shards import ShardStore, ShardTask
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings
from recall_pipeline.defs import tables
from recall_pipeline.defs.jobs import FEEDBACK_JOB
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.sharding import open_store, shard_count, shard_tasks
from recall_pipeline.resources import PipelineHome, Warehouse

COVERAGE_CHECK = "every_user_has_candidates"
NO_TRAIN_CHECK = "no_training_item_recalled"


class RecallConfig(dg.Config):
    """List length, provenance and shards. The fusion (route weights, popularity discount, RRF
    constant, EASE recency, MMR) is ``route_settings``': chosen on the full refresh's validation
    cut, or pinned there."""

    k: int = 100
    # compute the routes fused with weight 0 too, for their rank_<route> columns (default: not)
    compute_zero_weight_routes: bool = RouteSettings.compute_zero_weight_routes
    shards: int = 0  # shards by a hash of the user id (0: $RECALL_PIPELINE_SHARDS, default 1)
    # "auto": in feedback_refresh_job only the users whose history changed ("changed"), else "all"
    recompute: str = changed_users.AUTO

    def settings(self, chosen: RouteSettings) -> RouteSettings:
        """The chosen fusion with this run's list length and provenance."""
        return dataclasses.replace(chosen, mmr_pool=max(2 * self.k, chosen.depth),
                                   compute_zero_weight_routes=self.compute_zero_weight_routes)


ASSET = "recall_candidates"
PREVIEW_COLUMNS = ["user_id", "rank", "item_id", "score", "route", *[f"rank_{n}" for n in ROUTES]]
UPSTREAM = ("faiss_index", "two_tower_index", "user_profiles", "rating_matrix", "text_cf_model", "ease_model",
            "route_settings")


@dg.op(ins={name: dg.In(dg.Nothing) for name in UPSTREAM}, out=dg.DynamicOut(ShardTask), pool="warehouse")
def plan_recall_candidates(context: dg.OpExecutionContext, config: RecallConfig, warehouse: Warehouse,
                           home: PipelineHome):
    """The models this run serves, staged as its serving version (``core.recall.serving_version``),
    which users to compute (a feedback refresh: those whose history changed), and the shards'
    inputs (checked indexes included), by shard."""
    run_id = context.run.run_id
    parts = stage_serving_version(context, warehouse, home)
    settings = config.settings(chosen_route_settings(context, parts.route_settings))
    changed_only = changed_users.recompute_mode(config.recompute, context.job_name == FEEDBACK_JOB)
    models = f"{tables.serving_model_version(warehouse, parts)}|text_cf:{tables.text_cf_fit_run(parts)}"
    with warehouse.connect() as con:
        plan = incremental.plan_run(con, run_id, changed_only, parts.ease, models, settings, config.k)
    if plan.ease is None:  # no EASE model for this catalogue: fitted here, served and published with the lists
        candidates.fit_missing_ease(tables.rating_matrix(warehouse), settings, parts.ease, run_id, plan.reason)
        with warehouse.connect() as con:
            plan = incremental.plan_run(con, run_id, changed_only, parts.ease, models, settings, config.k)
    context.log.info(plan.reason)
    settings = settings.with_ease_fit(*plan.ease.fit_settings)  # the run scores with the model's fit settings
    inputs = candidates.with_stored_counts(tables.recall_inputs(warehouse, parts, plan.users), plan.ease)
    store, n_shards, rows = open_store(context, home, ASSET), shard_count(config.shards), recall_shards.all_user_rows(inputs)
    per_shard = recall_shards.export_inputs(store, run_id, inputs, rows, n_shards, plan.ease.model)
    recall_shards.export_plan(store, run_id, plan)
    context.log.info(f"{len(rows)} users to recall in {n_shards} shard(s): {per_shard.rows()}")
    yield from shard_tasks(store, run_id, n_shards, settings=settings, k=config.k)


def stage_serving_version(context: dg.OpExecutionContext, warehouse: Warehouse, home: PipelineHome) -> ServingParts:
    """This run's staged serving version (``serving_version.stage_for_run``), logged."""
    with warehouse.connect() as con:
        published_run = incremental.latest_published_run(con)
    staged = serving_version.stage_for_run(home.layout.serving, context.run.run_id, tables.staged_parts(home),
                                           context.job_name == FEEDBACK_JOB, published_run,
                                           lambda run: _ended(context.instance, run))
    for note in staged.cleaned:
        context.log.warning(note)
    context.log.info(f"serving version staged from {staged.sources}")
    return staged.parts


def _ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def chosen_route_settings(context: dg.OpExecutionContext, path: Path) -> RouteSettings:
    """The fusion ``route_settings`` stored at ``path`` (the defaults before its first materialization)."""
    choice = load_choice(path)
    if choice is None:
        context.log.warning("no route settings chosen yet (materialize route_settings): serving the defaults")
        return RouteSettings()
    context.log.info(f"route settings of run {choice.run_id} ({choice.how}): {choice.decision}")
    return choice.settings


@dg.op
def recall_shard(context: dg.OpExecutionContext, task: ShardTask) -> dict:
    """One shard's users: every route, fused and re-ranked, a block of users at a time, into
    ``candidates-<shard>-<block>``."""
    out = recall_shards.compute_shard(task.store, task.run_id, task.shard, task.params["settings"], task.params["k"])
    context.log.info(f"shard {task.shard}: recalled for {out.users} users in {out.parts} block(s)")
    return {"shard": task.shard, "url": task.url, "users": out.users, "parts": out.parts, "k": task.params["k"]}


@dg.op(out={"result": dg.Out(), "coverage": dg.Out(), "no_train": dg.Out()}, pool="warehouse")
def merge_recall_candidates(context: dg.OpExecutionContext, shards: list[dict], warehouse: Warehouse,
                            home: PipelineHome):
    """The shards' rows into ``recall.candidates`` (one transaction: a retried run replaces its
    own rows), the checks, and, once they pass, publishing the lists and then the serving version
    of their models; then the shard files are removed."""
    store, run_id, k = ShardStore(shards[0]["url"], ASSET), context.run.run_id, shards[0]["k"]
    parts = recall_shards.candidate_parts(store, run_id, {s["shard"]: s["parts"] for s in shards})
    plan, index_type = recall_shards.exported_plan(store, run_id), recall_shards.exported_meta(store, run_id)["lm_index_type"]
    with warehouse.connect() as con:  # one transaction; only checked lists become what users query
        stored = incremental.store_run(con, run_id, parts, plan)
        computed = incremental.computed_summary(con, run_id, PREVIEW_COLUMNS)
        short, leaked, published = published_tables.check_and_publish(con, run_id, k)
    store.remove(run_id)
    serving, settled = serving_version.settle(home.layout.serving, run_id, published)
    (context.log.info if published else context.log.warning)(settled)
    yield dg.AssetCheckResult(check_name=COVERAGE_CHECK, passed=short == 0, metadata={"users_short": short})
    yield dg.AssetCheckResult(check_name=NO_TRAIN_CHECK, passed=leaked == 0,
                              metadata={"training_items_recalled": leaked})
    context.log.info(f"{computed.rows} candidates computed for {stored.recomputed_users} users in {len(shards)} "
                     f"shard(s), {stored.copied_users} users' lists copied from {plan.previous_run}; "
                     f"routes {computed.route_shares.rows()}")
    yield dg.Output(None, "result", metadata={
        "dagster/row_count": stored.rows, "users": stored.recomputed_users + stored.copied_users,
        "users_recomputed": stored.recomputed_users, "users_copied": stored.copied_users,
        "copied_from": plan.previous_run or "none", "recompute_reason": plan.reason,
        "published": published, "serving_version": serving, "k": k, "shards": len(shards), "index_type": index_type,
        "distinct_items": computed.distinct_items, "route_shares": markdown_table(computed.route_shares),
        "preview": markdown_table(computed.preview),
    })


@dg.graph_asset(
    ins={name: dg.AssetIn(dagster_type=dg.Nothing) for name in UPSTREAM},
    group_name="recall",
    kinds={"duckdb", "faiss"},
    config=dg.ConfigMapping(config_fn=lambda c: {"plan_recall_candidates": {"config": c}},
                            config_schema=RecallConfig.to_config_schema()),
    check_specs=[
        dg.AssetCheckSpec(COVERAGE_CHECK, asset=ASSET, blocking=True,
                          description="every user gets min(K, items not in their training) candidates"),
        dg.AssetCheckSpec(NO_TRAIN_CHECK, asset=ASSET, blocking=True,
                          description="no user is recalled an item of their own training history"),
    ],
    description="Top-K recall candidates per user (default 100) from six routes, fused as route_settings chose: the two-tower "
                "model (serving version, default the MLflow champion) in the FAISS index of its "
                "item-tower outputs, the LM history profile in the FAISS index of LM embeddings, the LM interest vectors, EASE item-to-item CF, "
                "popularity for users without history, and TextCF for items nobody has interacted with; merged by weighted reciprocal-rank fusion "
                "with a popularity discount (fused score x (1 + training count)^-discount) and "
                "re-ranked by MMR. Computed in shards by a hash of the user id (config shards; each "
                "shard a step any executor can run elsewhere) and merged by one writer. "
                "Appended to DuckDB recall.candidates per run with each "
                "route's rank of the item (rank_<route>, null: not proposed, or the route fused with weight 0 "
                "and not computed: config compute_zero_weight_routes); once its checks "
                "pass the run is published and the view recall.latest shows it, and the models its "
                "lists were computed with become the current serving version (serving/CURRENT) with "
                "them; a run whose check fails leaves the previous lists and version current.",
)
def recall_candidates(faiss_index, two_tower_index, user_profiles, rating_matrix, text_cf_model, ease_model,
                      route_settings):
    plan = plan_recall_candidates(faiss_index=faiss_index, two_tower_index=two_tower_index,
                                  user_profiles=user_profiles, rating_matrix=rating_matrix,
                                  text_cf_model=text_cf_model, ease_model=ease_model, route_settings=route_settings)
    return merge_recall_candidates(plan.map(recall_shard).collect())
