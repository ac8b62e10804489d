"""``feedback_events``: new feedback files from the inbox, appended to the raw interactions."""

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from recall_pipeline.core.ingest import feedback
from recall_pipeline.resources import PipelineHome, Warehouse

FEEDBACK_KIND = feedback.FEEDBACK_KIND


class FeedbackConfig(dg.Config):
    """Which inbox files to ingest; empty means every file waiting in the inbox."""

    files: list[str] = []


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "polars"},
    pool="warehouse",
    description="Feedback files (CSV, Parquet or JSON lines: user_id, item_id, rating or "
                "event_type, timestamp) from <home>/inbox, appended to raw.interactions "
                "(source_kind 'feedback', batch id from the file's content hash) and recorded in "
                "raw.feedback_batches. A file already ingested (same content) is not ingested "
                "again; ingested files move to inbox/archive, unusable ones to inbox/rejected "
                "with a reason file.",
)
def feedback_events(context: dg.AssetExecutionContext, config: FeedbackConfig, warehouse: Warehouse,
                    home: PipelineHome) -> dg.MaterializeResult:
    inbox = home.layout.inbox
    files = [Path(f) for f in config.files] if config.files else feedback.pending_files(inbox)
    done = set()
    if warehouse.has_table("raw.feedback_batches"):
        done = set(warehouse.query("select content_hash from raw.feedback_batches")["content_hash"])

    def store(rows: pl.DataFrame, digest: str, path: Path) -> None:
        warehouse.append_tables({  # rows and their batch record land together, or not at all
            "raw.interactions": rows.with_columns(source_kind=pl.lit(FEEDBACK_KIND)),
            "raw.feedback_batches": pl.DataFrame({
                "content_hash": [digest], "file_name": [path.name], "rows": [rows.height],
                "dagster_run_id": [context.run.run_id],
                "ingested_at": [datetime.now(timezone.utc).replace(tzinfo=None)]}),
        })
        context.log.info(f"ingested {rows.height} events from {path.name}")

    counts = feedback.ingest_files(files, inbox, done, store, context.log.warning)
    return dg.MaterializeResult(metadata={**counts, "inbox": dg.MetadataValue.path(str(inbox))})
