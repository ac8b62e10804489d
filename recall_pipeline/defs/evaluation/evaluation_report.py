"""``evaluation_report``: the protocol's figures for the published lists and the baselines."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from recall_pipeline.core.serving.candidates import lists_from_frame, profile_scorer, route_shares, vectors_by_user
from recall_pipeline.core.evaluation.protocol import build_evaluation_data, evaluate
from recall_pipeline.core.evaluation import baselines
from recall_pipeline.core.ids import positions, require_same_ids
from recall_pipeline.core.serving.routes import RouteSettings, interest_scorer
from recall_pipeline.core.evaluation.report import metrics_table, mlflow_metrics, plots, render_html, write_report
from recall_pipeline.defs import tables
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.tables import interest_vectors, item_vectors, rating_matrix
from recall_pipeline.resources import MlflowTracking, PipelineHome, Warehouse

RANGE_CHECK = "metrics_within_unit_interval"
# Novelty is in bits (-log2 of a share), not a share: it is the one metric not bounded by 1.
UNBOUNDED = ("novelty",)


class EvaluationConfig(dg.Config):
    """Whether to compute the CF baselines (EASE, ItemKNN tuned on validation) in this run.

    They hold dense users x items scores: above ``baselines_max_cells`` they are skipped (with a
    warning) rather than exhaust memory on a large catalogue.
    """

    baselines: bool = True
    baselines_max_cells: int = 50_000_000


@dg.asset(
    group_name="evaluation",
    deps=["recall_candidates", "two_tower_index", "rating_matrix", "item_embeddings", "user_profiles", "cleaned_item_text"],
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(RANGE_CHECK, asset="evaluation_report", blocking=True,
                                   description="every stored share or rate of this run is in [0, 1]")],
    description="Every figure of docs/EVALUATION.md (warm Recall@20/50/100, NDCG@10/50, "
                "coverage, long tail, novelty, diversity; cold Recall/NDCG@20; the sparse slice) "
                "for the published lists and for MostPopular, ItemKNN and EASE tuned on the "
                "validation cut, same split, same run; the published lists are those of "
                "recall.latest. Appended to DuckDB eval.metrics; an HTML report in reports/; "
                "logged to MLflow.",
)
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      warehouse: Warehouse, home: PipelineHome, mlflow: MlflowTracking):
    run_id = context.run.run_id
    rm = rating_matrix(home)
    split = warehouse.query("select * from features.interactions_split")
    if not warehouse.has_table("recall.published_runs"):
        raise RuntimeError("no published recall lists yet; materialize recall_candidates first")
    candidates = warehouse.query(
        "select run_id, user_id, rank, item_id, model_version, route from recall.latest")
    ids, vectors, encoder = item_vectors(warehouse)
    require_same_ids(rm.item_ids, ids, "item embeddings against the rating matrix's items")
    items = warehouse.query("select item_id, genres from clean.items order by item_id")
    require_same_ids(rm.item_ids, items["item_id"].to_numpy(), "clean.items against the rating matrix's items")
    data = build_evaluation_data(split, rm, items["genres"].to_list(), vectors)
    profiles = warehouse.query("select user_id, embedding from features.user_profiles")
    user_vectors = vectors_by_user(rm, profiles["user_id"].to_numpy(),
                                   profiles["embedding"].to_numpy().reshape(profiles.height, vectors.shape[1]))
    lm_profile = profile_scorer(user_vectors, vectors)
    owners, interests = interest_vectors(warehouse)
    two_tower = _two_tower_scorer(home, split, rm, ids, vectors, encoder)
    routes = {"two_tower": two_tower, "lm_profile": lm_profile,
              "lm_interest": interest_scorer(rm, positions(rm.user_ids, owners, "interest users"), interests, vectors),
              "ease": baselines.ease(rm.matrix, RouteSettings.ease_lambda)}
    with_baselines = config.baselines and rm.matrix.shape[0] * rm.matrix.shape[1] <= config.baselines_max_cells
    if config.baselines and not with_baselines:
        context.log.warning(f"baselines skipped: {rm.matrix.shape} is above baselines_max_cells")
    report = evaluate(split, data, lists_from_frame(rm, candidates), final_cold=two_tower,
                      routes=routes, with_baselines=with_baselines)

    model_version = candidates["model_version"][0]
    metrics = pl.DataFrame(report.rows).select(
        pl.lit(run_id).alias("run_id"), pl.lit(model_version).alias("model_version"), pl.all(),
        pl.lit(candidates["run_id"][0]).alias("candidates_run_id"),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("created_at"))
    if warehouse.has_table("eval.metrics"):
        with warehouse.connect() as con:
            con.execute("delete from eval.metrics where run_id = ?", [run_id])
    warehouse.append_table("eval.metrics", metrics)

    images = plots(report, data.train_counts, route_shares(candidates))
    path = write_report(home.layout.reports, run_id, render_html(report, images, run_id, model_version), images)
    with mlflow.start_run("evaluation_report", {"dagster_run_id": run_id,
                                                "model_version": model_version}) as (client, mlflow_run):
        client.log_metrics(mlflow_metrics(report.rows))
        client.log_params({f"{name}.{t['parameter']}": t["value"] for name, t in report.tuning.items()})
        client.log_artifact(str(path))

    stored = warehouse.query("select metric, value from eval.metrics where run_id = ?", [run_id])
    bounded = stored.filter(~pl.col("metric").is_in(UNBOUNDED))["value"]
    yield dg.AssetCheckResult(check_name=RANGE_CHECK,
                              passed=bool(bounded.len() and bounded.is_between(0.0, 1.0).all()),
                              metadata={"metrics": stored.height})
    warm = metrics_table(report.rows, "warm").with_columns(pl.selectors.float().round(4))
    with pl.Config(tbl_cols=-1, tbl_width_chars=200, tbl_hide_column_data_types=True):
        context.log.info(f"evaluation (warm slice):\n{warm}")
    yield dg.MaterializeResult(metadata={
        "warm": markdown_table(warm, rows=20),
        "cold": markdown_table(metrics_table(report.rows, "cold").with_columns(pl.selectors.float().round(4))),
        "report": dg.MetadataValue.path(str(path)),
        "mlflow_run_id": mlflow_run.info.run_id,
        "model_version": model_version,
        **_headline(report.rows),
    })


def _two_tower_scorer(home: PipelineHome, split: pl.DataFrame, rm, ids, lm_vectors, encoder: str):
    """The serving two-tower model as a dense scorer (also what ranks cold items: from text)."""
    from recall_pipeline.core.training import recall_model as training

    from recall_pipeline.core.training import two_tower

    model, _ = tables.two_tower_model(home.layout.indexes / "two_tower", ids, lm_vectors, encoder)
    return two_tower.dense_scorer(model, training.training_sequences(split, rm), len(rm.user_ids))


def _headline(rows: list[dict]) -> dict[str, dg.MetadataValue]:
    """Numeric metadata that the asset page plots over time."""
    wanted = {("warm", "recall", 50), ("warm", "ndcg", 10), ("warm", "coverage", 50),
              ("cold", "recall", 20), ("sparse", "recall", 50)}
    return {f"{r['model']}/{r['slice']}/{r['metric']}@{r['k']}": dg.MetadataValue.float(round(r["value"], 4))
            for r in rows if (r["slice"], r["metric"], r["k"]) in wanted}
