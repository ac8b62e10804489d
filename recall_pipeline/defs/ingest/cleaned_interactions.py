"""``cleaned_interactions``: typed, valid, de-duplicated interactions; the rest quarantined."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from recall_pipeline.core.ingest.bursts import REASON as BURST_REASON, BurstSettings, burst_summary
from recall_pipeline.core.ingest.interactions import clean_interactions, nothing_clean_message
from recall_pipeline.defs.config import config_from
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import DataSource, Warehouse

RECONCILE_CHECK = "raw_rows_reconcile"

BurstConfig = config_from(BurstSettings, "BurstConfig",
                          "When ratings count as a coordinated burst of new or thin accounts, whose rows are "
                          "quarantined as suspected_burst (see recall_pipeline.core.ingest.bursts); "
                          "enabled=false turns the guard off.")


@dg.asset(
    group_name="ingest",
    deps=["raw_interactions", "feedback_events", "cleaned_item_text"],
    kinds={"duckdb", "polars"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset="cleaned_interactions", blocking=True,
                                   description="raw rows = clean rows + quarantined rows")],
    description="Valid interactions with typed ids, ratings and timestamps (DuckDB "
                "clean.interactions). Every rejected row is in quarantine.interactions with "
                "its reason; raw = clean + quarantined. Coordinated pushes (many new or thin accounts "
                "rating one item at an extreme within an hour, a day or a week) are quarantined as suspected_burst.",
)
def cleaned_interactions(context: dg.AssetExecutionContext, config: BurstConfig, data_source: DataSource,
                         warehouse: Warehouse):
    raw = warehouse.query("select * from raw.interactions")
    known = warehouse.query("select item_id from clean.items")["item_id"]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    clean, quarantine = clean_interactions(raw, known, data_source.cleaning_rules(), now,
                                           BurstSettings(**config.model_dump()))
    # one transaction: a reader never sees raw != clean + quarantined
    warehouse.replace_tables({"clean.interactions": clean, "quarantine.interactions": quarantine})
    if clean.is_empty():  # the quarantine table is written: the user can look at every row
        raise dg.Failure(description=nothing_clean_message(quarantine))
    reasons = quarantine.group_by("reason").len().sort("len", descending=True)
    context.log.info(f"{clean.height} clean, {quarantine.height} quarantined of {raw.height} raw")
    bursts = burst_summary(quarantine)
    for rows, _, detail in bursts.iter_rows():
        context.log.warning(f"{rows} rows quarantined: {detail}")
    counts = warehouse.row_counts("raw.interactions", "clean.interactions", "quarantine.interactions")
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        passed=counts["raw.interactions"] == counts["clean.interactions"] + counts["quarantine.interactions"],
        metadata=counts,
    )
    yield dg.MaterializeResult(metadata=_metadata(clean, quarantine, reasons, bursts))


def _metadata(clean: pl.DataFrame, quarantine: pl.DataFrame, reasons: pl.DataFrame, bursts: pl.DataFrame) -> dict:
    return {
        "dagster/row_count": clean.height,
        "quarantined": quarantine.height,
        "quarantine_reasons": markdown_table(reasons, rows=20),
        "suspected_burst_rows": int((quarantine["reason"] == BURST_REASON).sum()),
        "suspected_bursts": markdown_table(bursts, rows=20),
        "users": clean["user_id"].n_unique(),
        "items": clean["item_id"].n_unique(),
        "preview": markdown_table(clean.sort("timestamp", descending=True)),
        "first_timestamp": str(clean["timestamp"].min()),
        "last_timestamp": str(clean["timestamp"].max()),
    }
