"""``cleaned_interactions``: typed, valid, de-duplicated interactions; the rest quarantined."""

from datetime import datetime, timezone

import dagster as dg

from recall_pipeline.core.ingest.interactions import clean_interactions, nothing_clean_message
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import DataSource, Warehouse

RECONCILE_CHECK = "raw_rows_reconcile"


@dg.asset(
    group_name="ingest",
    deps=["raw_interactions", "feedback_events", "cleaned_item_text"],
    kinds={"duckdb", "polars"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset="cleaned_interactions", blocking=True,
                                   description="raw rows = clean rows + quarantined rows")],
    description="Valid interactions with typed ids, ratings and timestamps (DuckDB "
                "clean.interactions). Every rejected row is in quarantine.interactions with "
                "its reason; raw = clean + quarantined.",
)
def cleaned_interactions(context: dg.AssetExecutionContext, data_source: DataSource,
                         warehouse: Warehouse):
    raw = warehouse.query("select * from raw.interactions")
    known = warehouse.query("select item_id from clean.items")["item_id"]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    clean, quarantine = clean_interactions(raw, known, data_source.cleaning_rules(), now)
    warehouse.replace_table("clean.interactions", clean)
    warehouse.replace_table("quarantine.interactions", quarantine)
    if clean.is_empty():  # the quarantine table is written: the user can look at every row
        raise dg.Failure(description=nothing_clean_message(quarantine))
    reasons = quarantine.group_by("reason").len().sort("len", descending=True)
    context.log.info(f"{clean.height} clean, {quarantine.height} quarantined of {raw.height} raw")
    counts = warehouse.row_counts("raw.interactions", "clean.interactions", "quarantine.interactions")
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        passed=counts["raw.interactions"] == counts["clean.interactions"] + counts["quarantine.interactions"],
        metadata=counts,
    )
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": clean.height,
        "quarantined": quarantine.height,
        "quarantine_reasons": markdown_table(reasons, rows=20),
        "users": clean["user_id"].n_unique(),
        "items": clean["item_id"].n_unique(),
        "preview": markdown_table(clean.sort("timestamp", descending=True)),
        "first_timestamp": str(clean["timestamp"].min()),
        "last_timestamp": str(clean["timestamp"].max()),
    })
