"""Small helpers that turn frames into Dagster metadata."""

from __future__ import annotations

import dagster as dg
import polars as pl


def markdown_table(frame: pl.DataFrame, rows: int = 10) -> dg.MetadataValue:
    """The first ``rows`` rows as a markdown table for the asset page."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True,
                   tbl_hide_dataframe_shape=True, tbl_rows=rows, tbl_cols=-1, fmt_str_lengths=80):
        return dg.MetadataValue.md(str(frame.head(rows)))
