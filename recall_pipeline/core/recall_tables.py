"""The recall tables in DuckDB: checks on a run's candidates, and publishing a run.

``recall.candidates`` keeps every run's rows. A run is *published* (listed in
``recall.published_runs``) only after its checks pass, and the view ``recall.latest`` shows the
newest published run, so a failed or half-checked run is never what users query.
"""

from __future__ import annotations

import duckdb

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
