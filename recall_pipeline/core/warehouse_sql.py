"""Writing frames into DuckDB tables whose columns grow over releases."""

from __future__ import annotations

import duckdb
import polars as pl


def insert_by_name(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame,
                   where: str | None = None, params: list | None = None) -> None:
    """Insert by column name, creating the table if missing and adding columns the frame has and
    the table lacks (so a warehouse written by an earlier release takes a new route's column and
    keeps its older rows); first delete rows matching ``where``."""
    con.execute(f"create schema if not exists {table.split('.')[0]}")
    con.register("incoming", frame.to_arrow())
    try:
        con.execute(f"create table if not exists {table} as select * from incoming limit 0")
        existing = {row[0] for row in con.execute(f"describe {table}").fetchall()}
        for name, dtype in con.execute("select column_name, column_type from (describe incoming)").fetchall():
            if name not in existing:
                con.execute(f'alter table {table} add column "{name}" {dtype}')
        if where:
            con.execute(f"delete from {table} where {where}", params or [])
        con.execute(f"insert into {table} by name select * from incoming")
    finally:
        con.unregister("incoming")
