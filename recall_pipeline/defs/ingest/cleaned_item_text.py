"""``cleaned_item_text``: one row per item with cleaned fields and the text the LM encodes."""

import dagster as dg
import polars as pl

from recall_pipeline.core.ingest.item_text import clean_items
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import DataSource, Warehouse

RECONCILE_CHECK = "raw_items_reconcile"


@dg.asset(
    group_name="ingest",
    deps=["raw_items"],
    kinds={"duckdb", "polars"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset="cleaned_item_text", blocking=True,
                                   description="raw item rows = merged rows + quarantined rows")],
    description="Cleaned item metadata (NFKC, HTML and whitespace stripped, trailing article "
                "moved to the front, duplicates merged) and the composed item text. DuckDB "
                "tables clean.items and quarantine.items.",
)
def cleaned_item_text(context: dg.AssetExecutionContext, data_source: DataSource,
                      warehouse: Warehouse):
    raw = warehouse.query("select * from raw.items")
    items, quarantine = clean_items(raw, data_source.id_type, data_source.genre_separator)
    warehouse.replace_table("clean.items", items)
    warehouse.replace_table("quarantine.items", quarantine)
    merged = int(items["source_rows"].sum()) - items.height
    empty = items.filter(pl.col("item_text") == "").height
    context.log.info(f"{items.height} items, {merged} duplicate rows merged, "
                     f"{quarantine.height} quarantined, {empty} with no text")
    stored = warehouse.query(
        "select (select count(*) from raw.items) as raw_rows,"
        " (select coalesce(sum(source_rows), 0) from clean.items) as merged_rows,"
        " (select count(*) from quarantine.items) as quarantined").row(0, named=True)
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        passed=stored["raw_rows"] == stored["merged_rows"] + stored["quarantined"],
        metadata={key: int(value) for key, value in stored.items()},
    )
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": items.height,
        "duplicate_rows_merged": merged,
        "quarantined": quarantine.height,
        "items_without_text": empty,
        "preview": markdown_table(items.select("item_id", "item_text")),
    })
