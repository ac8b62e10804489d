"""``evaluation_report``: the protocol's figures for the published recall lists and baselines."""

from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from recall_pipeline.core.evaluation import evaluate_recall
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.tables import item_vectors, rating_matrix
from recall_pipeline.resources import PipelineHome, Warehouse

RANGE_CHECK = "metrics_within_unit_interval"


@dg.asset(
    group_name="evaluation",
    deps=["recall_candidates"],
    kinds={"duckdb"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(RANGE_CHECK, asset="evaluation_report",
                                   description="every stored metric of this run is within [0, 1]")],
    description="Warm-slice Recall@20/50/100 and NDCG@10 of the published recall lists, and "
                "cold-item Recall@20/NDCG@20, with MostPopular computed on the same split in the "
                "same run (shared/EVALUATION.md). Appended to DuckDB eval.metrics.",
)
def evaluation_report(context: dg.AssetExecutionContext, warehouse: Warehouse,
                      home: PipelineHome):
    run_id = context.run.run_id
    rm = rating_matrix(home)
    split = warehouse.query("select * from features.interactions_split")
    candidates = warehouse.query(
        "select user_id, rank, item_id, model_version from recall.candidates where run_id = ?", [run_id])
    if candidates.is_empty():
        raise RuntimeError(f"recall.candidates has no rows for run {run_id}; materialize recall_candidates")
    k = int(candidates["rank"].max())
    lists = np.full((len(rm.user_ids), k), -1, dtype=np.int64)
    lists[np.searchsorted(rm.user_ids, candidates["user_id"].to_numpy()),
          candidates["rank"].to_numpy() - 1] = np.searchsorted(rm.item_ids, candidates["item_id"].to_numpy())
    ids, vectors, _ = item_vectors(warehouse)
    profiles = warehouse.query("select user_id, embedding from features.user_profiles")
    user_vectors = np.zeros((len(rm.user_ids), vectors.shape[1]), dtype=np.float32)
    user_vectors[np.searchsorted(rm.user_ids, profiles["user_id"].to_numpy())] = (
        profiles["embedding"].to_numpy())
    model_version = candidates["model_version"][0]
    metrics = pl.DataFrame(evaluate_recall(split, rm, lists, user_vectors, vectors)).select(
        pl.lit(run_id).alias("run_id"), pl.lit(model_version).alias("model_version"), pl.all(),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("created_at"),
    )
    if warehouse.has_table("eval.metrics"):
        with warehouse.connect() as con:
            con.execute("delete from eval.metrics where run_id = ?", [run_id])
    warehouse.append_table("eval.metrics", metrics)
    stored = warehouse.query("select value from eval.metrics where run_id = ?", [run_id])["value"]
    yield dg.AssetCheckResult(check_name=RANGE_CHECK,
                              passed=bool(stored.len() and stored.is_between(0.0, 1.0).all()),
                              metadata={"metrics": stored.len()})
    table = metrics.with_columns(name=pl.format("{}@{}", "metric", "k")).pivot(
        "name", index=["slice", "model"], values="value").sort("slice", "model", descending=True)
    headline = {f"{r['model']}/{r['slice']}/{r['metric']}@{r['k']}": round(r["value"], 4)
                for r in metrics.iter_rows(named=True)}
    context.log.info(f"evaluation: {headline}")
    yield dg.MaterializeResult(metadata={
        "table": markdown_table(table.with_columns(pl.selectors.float().round(4)), rows=20),
        "model_version": model_version,
        **{key: dg.MetadataValue.float(value) for key, value in headline.items()},
    })
