"""``raw_interactions`` and ``raw_items``: the source as loaded, one batch per run.

Both come from one load (the bundled set is a single joined table), so they materialize
together. Every value is stored as text with its source file, row and batch id: nothing is
parsed or dropped here, so the raw tables are the record that cleaning reconciles against.
"""

import dagster as dg
import polars as pl

from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import DataSource, Warehouse

SOURCE_KIND = "source"


@dg.multi_asset(
    specs=[
        dg.AssetSpec("raw_interactions", group_name="ingest", kinds={"duckdb", "polars"},
                     description="Interactions exactly as loaded (text), with source file, row "
                                 "and batch id. DuckDB table raw.interactions: this load replaces "
                                 "the source's rows (source_kind 'source'); feedback rows stay."),
        dg.AssetSpec("raw_items", group_name="ingest", kinds={"duckdb", "polars"},
                     description="Item metadata exactly as loaded (text), with source file, row "
                                 "and batch id. DuckDB table raw.items."),
    ],
    pool="warehouse",
)
def raw_interactions_and_items(context: dg.AssetExecutionContext, data_source: DataSource,
                               warehouse: Warehouse):
    interactions, items = data_source.load(batch_id=context.run.run_id)
    # the source's rows are replaced by this load; feedback rows appended by feedback_events stay
    interactions = interactions.with_columns(event_type=pl.lit(None, dtype=pl.String),
                                             source_kind=pl.lit(SOURCE_KIND))
    warehouse.replace_rows("raw.interactions", interactions, where="source_kind = ?", params=[SOURCE_KIND])
    warehouse.replace_table("raw.items", items)
    source = "bundled dslabs/movielens" if data_source.is_bundled else data_source.interactions_path
    context.log.info(f"loaded {interactions.height} interactions and {items.height} items from {source}")
    for key, frame in (("raw_interactions", interactions), ("raw_items", items)):
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={"dagster/row_count": frame.height, "source": source,
                      "batch_id": context.run.run_id, "preview": markdown_table(frame)},
        )
