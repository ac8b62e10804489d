"""``published_warehouse``: the read copy users query while the pipeline writes."""

import dagster as dg

from recall_pipeline.core.recall.published_tables import publish_copy
from recall_pipeline.resources import PipelineHome, Warehouse


@dg.asset(
    group_name="recall",
    deps=["recall_candidates", "evaluation_report"],
    kinds={"duckdb"},
    pool="warehouse",
    description="<home>/published.duckdb: recall.latest, recall.candidates, recall.published_runs, "
                "eval.metrics, eval.cold_rankings, catalog.items and catalog.user_profiles, written aside and renamed "
                "into place after each successful refresh. Open it read-only: it is never locked "
                "by the pipeline and never half-written.",
)
def published_warehouse(context: dg.AssetExecutionContext, warehouse: Warehouse,
                        home: PipelineHome) -> dg.MaterializeResult:
    counts = publish_copy(warehouse.path_obj, home.layout.published)
    context.log.info(f"published {home.layout.published}: {counts}")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(home.layout.published)),
        **{f"rows/{table}": n for table, n in counts.items()},
    })
