"""The recall tables in DuckDB: checks on a run's candidates, and publishing a run.

``recall.candidates`` keeps every run's rows. A run is *published* (listed in
``recall.published_runs``) only after its checks pass, and the view ``recall.latest`` shows the
newest published run, so a failed or half-checked run is never what users query. After a
successful refresh the tables users query are copied to a separate read-only file
(``published.duckdb``) and swapped in atomically, so queries never wait for or collide with the
pipeline's single writer.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

LATEST_VIEW = """
create or replace view recall.latest as
select c.* from recall.candidates c
where c.run_id = (select run_id from recall.published_runs order by published_at desc limit 1)
"""


def users_short_of_candidates(con: duckdb.DuckDBPyConnection, run_id: str, k: int) -> int:
    """Users of the rating matrix whose list is not min(k, catalogue - distinct training items)."""
    return con.execute(
        """
        with seen as (
            select u.user_id, count(distinct s.item_id) as n_seen
            from features.user_index u
            left join features.interactions_split s on s.user_id = u.user_id and s.part = 'train'
            group by u.user_id
        ), got as (
            select user_id, count(*) as n from recall.candidates where run_id = ? group by user_id
        )
        select count(*) from seen left join got using (user_id)
        where coalesce(got.n, 0) <> least(?, (select count(*) from features.item_index) - seen.n_seen)
        """, [run_id, k]).fetchall()[0][0]


def training_items_recalled(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Rows of the run that recall an item of the user's own training history."""
    return con.execute(
        """
        select count(*) from recall.candidates c
        where c.run_id = ? and exists (
            select 1 from features.interactions_split s
            where s.user_id = c.user_id and s.item_id = c.item_id and s.part = 'train')
        """, [run_id]).fetchall()[0][0]


def publish_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Make the run's candidates what ``recall.latest`` shows."""
    con.execute("create table if not exists recall.published_runs "
                "(run_id varchar primary key, published_at timestamp)")
    con.execute("insert or replace into recall.published_runs values (?, now()::timestamp)", [run_id])
    con.execute(LATEST_VIEW)


def check_and_publish(con: duckdb.DuckDBPyConnection, run_id: str, k: int) -> tuple[int, int, bool]:
    """(users short of candidates, training items recalled, published): the run's lists become
    what users query only when both checks find nothing."""
    short, leaked = users_short_of_candidates(con, run_id, k), training_items_recalled(con, run_id)
    published = short == 0 and leaked == 0
    if published:
        publish_run(con, run_id)
    return short, leaked, published


# What users query: (table in the published copy, query on the warehouse).
PUBLISHED_TABLES = {
    "recall.latest": "select * from src.recall.latest",
    "recall.candidates": "select * from src.recall.candidates",
    "recall.published_runs": "select * from src.recall.published_runs",
    "recall.refreshes": "select * from src.recall.refreshes",
    "eval.metrics": "select * from src.eval.metrics",
    "eval.cold_rankings": "select * from src.eval.cold_rankings",
    "eval.comparisons": "select * from src.eval.comparisons",
    "catalog.items": "select item_id, title, year, genres, description, item_text from src.clean.items",
    "catalog.user_profiles": "select user_id, history_size, profile_text from src.features.user_profiles",
}
# Published only when present: a home whose recall lists (or evaluation) were written before the
# table existed.
OPTIONAL_TABLES = {"recall.refreshes", "eval.comparisons"}


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal (quotes doubled), for the statements that take no bound
    parameters; any path works, a home folder named ``it's mine`` included."""
    return "'" + text.replace("'", "''") + "'"


def publish_copy(warehouse: Path, target: Path, tables: dict[str, str] = PUBLISHED_TABLES) -> dict[str, int]:
    """Write the tables users query to a new DuckDB file beside ``target``, then rename it onto
    ``target``: readers holding the old file keep a complete old copy, new readers get the
    complete new one, and nobody ever sees a half-written table or waits on the writer's lock.
    Returns the row count of each published table."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    counts = {}
    with duckdb.connect(str(tmp)) as con:
        con.execute(f"attach {sql_literal(str(warehouse))} as src (read_only)")  # ATTACH binds no parameters
        present = {f"{s}.{t}" for s, t in con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'src'").fetchall()}
        for table, query in tables.items():
            if table in OPTIONAL_TABLES and table not in present:
                continue
            con.execute(f"create schema if not exists {table.split('.')[0]}")
            con.execute(f"create table {table} as {query}")
            counts[table] = con.execute(f"select count(*) from {table}").fetchall()[0][0]
        con.execute("detach src")
    os.replace(tmp, target)
    return counts


def candidates_frame(rm, merged, user_ids: np.ndarray | None = None) -> pl.DataFrame:
    """One row per (user, rank): item id, fused score, the primary route, and every route's
    rank of the item (``rank_<route>``, null where the route did not propose it). The rows of
    ``merged`` are ``rm``'s users, or ``user_ids`` when it holds a subset (a shard)."""
    valid = merged.items >= 0
    user_rows, ranks = np.nonzero(valid)
    columns = {
        "user_id": (rm.user_ids if user_ids is None else np.asarray(user_ids))[user_rows],
        "rank": (ranks + 1).astype(np.int32),
        "item_id": rm.item_ids[merged.items[valid]],
        "score": merged.scores[valid],
        "route": merged.primary_route[valid].astype(str),
    }
    frame = pl.DataFrame(columns)
    return frame.with_columns(
        pl.Series(f"rank_{name}", np.where(r[valid] > 0, r[valid], 0)).cast(pl.Int32).replace(0, None)
        for name, r in merged.route_ranks.items())
