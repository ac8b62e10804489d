"""``evaluation_report``: the protocol's figures for the published lists and the baselines."""

import dagster as dg
import polars as pl

from recall_pipeline.core.evaluation import evaluation_report as evaluation
from recall_pipeline.core.evaluation.protocol import BASELINE_VALIDATION_USERS
from recall_pipeline.core.evaluation.report_html import (
    log_to_mlflow, metrics_table, plots, render_html, selection_html, write_report,
)
from recall_pipeline.core.recall.chosen_settings import load_choice
from recall_pipeline.core.recall.list_rows import route_shares
from recall_pipeline.defs import tables
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import MlflowTracking, PipelineHome, Warehouse

RANGE_CHECK = "metrics_within_unit_interval"


class EvaluationConfig(dg.Config):
    """Whether to compute the CF baselines (MostPopular, ItemKNN and EASE tuned on validation)
    in this run, on how many held-out users they are tuned, and how many users x items each
    slice may rank.

    Every scored user ranks the whole catalogue (or every cold item): above
    ``max_evaluation_cells`` a slice is scored on a seeded sample of its users (stored as slice
    "users" rows of eval.metrics), so evaluating grows with users x K, not users x items. The
    baselines are scored on the same users as the lists, at every size; their tuning ranks a
    seeded sample of at most ``baselines_validation_users`` held-out users per grid value.
    """

    baselines: bool = True
    baselines_validation_users: int = BASELINE_VALIDATION_USERS
    max_evaluation_cells: int = evaluation.MAX_EVALUATION_CELLS


@dg.asset(
    group_name="evaluation",
    deps=["recall_candidates", "two_tower_index", "text_cf_model", "rating_matrix", "item_embeddings", "user_profiles",
          "cleaned_item_text"],
    kinds={"duckdb", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(RANGE_CHECK, asset="evaluation_report", blocking=True,
                                   description="every stored share or rate of this run is in [0, 1]")],
    description="Every figure of docs/EVALUATION.md (warm Recall@20/50/100, NDCG@10/50, "
                "coverage, long tail, novelty, diversity; cold Recall/NDCG@20; the sparse slice) "
                "for the published lists and for MostPopular, ItemKNN and EASE tuned on the "
                "validation cut, same split, same run; the published lists are those of "
                "recall.latest; with them the quarantined and suspected_burst interaction rows (model "
                "'data', slice 'ingest'). Appended to DuckDB eval.metrics, with the cold ranking that "
                "final's cold figures score in eval.cold_rankings and final's gain over every other "
                "model, user by user with its 95% paired-bootstrap interval, in eval.comparisons "
                "(same transaction); test rows the "
                "serving model trained on before the split moved are left out of every figure "
                "(eval.metrics.test_rows_excluded); an HTML report in reports/; logged to MLflow.",
)
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      warehouse: Warehouse, home: PipelineHome, mlflow: MlflowTracking):
    run_id, inputs = context.run.run_id, tables.evaluation_inputs(warehouse, home)
    evaluated = evaluation.evaluate_published(inputs, config.baselines, config.max_evaluation_cells,
                                              config.baselines_validation_users)
    report, data = evaluated.report, evaluated.data
    for note in data.sample_notes():
        context.log.warning(f"{note} (max_evaluation_cells {config.max_evaluation_cells:,})")
    if not evaluated.excluded_test_rows.is_empty():
        context.log.warning(f"test rows excluded: {evaluated.exclusion_note}")
    compared = evaluation.comparisons_frame(evaluated, run_id, inputs)
    warehouse.replace_rows_in({"eval.metrics": evaluation.metrics_frame(evaluated, run_id, inputs),
                               "eval.cold_rankings": evaluation.cold_rankings_frame(evaluated, run_id),
                               "eval.comparisons": compared},
                              "run_id = ?", [run_id])
    model_version = inputs.candidates_model_version
    images = plots(report, data.train_counts, route_shares(inputs.candidates))
    path = write_report(home.layout.reports, home.layout.latest_report, run_id,
                        render_html(report, images, run_id, model_version, evaluated.exclusion_note,
                                    _selection(home, inputs), compared), images)
    with mlflow.start_run("evaluation_report", {"dagster_run_id": run_id, "model_version": model_version}) as (
            tracker, mlflow_run):
        log_to_mlflow(tracker, report, path)
        tracker.log_params({"test_rows_excluded": evaluated.excluded_test_rows.height})
    stored = warehouse.query("select metric, value from eval.metrics where run_id = ?", [run_id])
    yield dg.AssetCheckResult(check_name=RANGE_CHECK, passed=evaluation.within_unit_interval(stored),
                              metadata={"metrics": stored.height})
    warm, cold = (metrics_table(report.rows, s).with_columns(pl.selectors.float().round(4)) for s in ("warm", "cold"))
    with pl.Config(tbl_cols=-1, tbl_width_chars=200, tbl_hide_column_data_types=True):
        context.log.info(f"evaluation (warm slice):\n{warm}")
    against = compared.filter(pl.col("slice") == "warm", pl.col("metric") == "recall")
    yield dg.MaterializeResult(metadata={
        "warm": markdown_table(warm, rows=20), "cold": markdown_table(cold),
        "final_against_warm_recall@50": markdown_table(
            against.select("against", "gain", "lower", "upper", "users").with_columns(pl.selectors.float().round(4)),
            rows=20),
        "report": dg.MetadataValue.path(str(path)), "mlflow_run_id": mlflow_run.info.run_id,
        "model_version": model_version, **_figures(evaluated, inputs)})


def _selection(home: PipelineHome, inputs) -> str:
    """The report's fusion section: the stored choice when the evaluated lists served it."""
    choice = load_choice(tables.published_parts(home, inputs.candidates_run_id).route_settings)
    if choice is None or choice.settings.to_json() != inputs.route_settings.to_json():
        return selection_html("not recorded", {})
    return selection_html(choice.how, choice.record)


def _figures(evaluated, inputs) -> dict:
    """The counts and headline figures the asset page shows and plots over time."""
    return {
        "test_rows_excluded": evaluated.excluded_test_rows.height, "test_rows_excluded_why": evaluated.exclusion_note,
        **{row["metric"]: dg.MetadataValue.int(int(row["value"])) for row in evaluation.ingest_rows(inputs.quarantined)},
        **{f"users_{row['metric']}": dg.MetadataValue.int(int(row["value"])) for row in evaluated.data.sample_rows()},
        **{name: dg.MetadataValue.float(value) for name, value in evaluation.headline(evaluated.report.rows).items()},
    }
