"""Which users' training history changed: a hash of each user's training rows, kept beside what
was computed from it, so that a feedback refresh recomputes per-user results (profiles, recall
lists) only where the history they were computed from is no longer the current one.

The hash covers (item, rating, timestamp) of every training row, so anything that changes a
history is seen: new feedback rows, the split moving an older row out of training (the last
fifth of each user is held out), rows the burst guard quarantines or releases, a new user.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

ALL, CHANGED, AUTO = "all", "changed", "auto"


def recompute_mode(value: str, feedback_refresh: bool) -> bool:
    """Whether to recompute only the users whose history changed: ``changed``; ``all``: every
    user; ``auto`` (the default): ``changed`` in a feedback refresh, ``all`` otherwise."""
    if value not in (ALL, CHANGED, AUTO):
        raise ValueError(f"recompute must be {ALL!r}, {CHANGED!r} or {AUTO!r}, not {value!r}")
    return value == CHANGED or (value == AUTO and feedback_refresh)


# Per user of the rating matrix: a hash of their training rows and how many there are.
HISTORY_DIGESTS = """
select u.user_id, coalesce(h.history_hash, 0) as history_hash, coalesce(h.train_rows, 0) as train_rows
from features.user_index u left join (
    select user_id, hash(list((item_id, rating, "timestamp") order by item_id, "timestamp", rating)) as history_hash,
           count(*) as train_rows
    from features.interactions_split where part = 'train' group by user_id
) h using (user_id)
"""


def history_digests(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """user_id, history_hash, train_rows for every user of the rating matrix."""
    return con.sql(HISTORY_DIGESTS).pl()


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    schema, name = table.split(".")
    return bool(con.execute("select count(*) from information_schema.columns where table_schema = ? "
                            "and table_name = ? and column_name = ?", [schema, name, column]).fetchall()[0][0])


def profiles_to_recompute(con: duckdb.DuckDBPyConnection) -> np.ndarray | None:
    """Users with training history whose stored profile was built from another history, or who
    have none (None: no profiles with history hashes are stored yet, so every user)."""
    if not has_column(con, "features.user_profiles", "history_hash"):
        return None
    return con.sql(f"""
        with now as ({HISTORY_DIGESTS})
        select now.user_id from now left join features.user_profiles p using (user_id)
        where now.train_rows > 0 and (p.user_id is null or p.history_hash is distinct from now.history_hash)
        order by now.user_id""").pl()["user_id"].to_numpy()


def stored_interest_texts(con: duckdb.DuckDBPyConnection, users: np.ndarray) -> pl.DataFrame:
    """user_id, profile_text, interest_embedding of the stored profiles of ``users``."""
    con.register("wanted_users", pl.DataFrame({"user_id": users}).to_arrow())
    try:
        return con.sql("select user_id, profile_text, interest_embedding from features.user_profiles "
                       "where user_id in (select user_id from wanted_users)").pl()
    finally:
        con.unregister("wanted_users")


def replace_profiles_of(con: duckdb.DuckDBPyConnection, users: np.ndarray, profiles: pl.DataFrame,
                        interests: pl.DataFrame) -> int:
    """In one transaction: drop the profiles and interests of ``users`` and of everyone who no
    longer has training history, then insert the new ones. Returns the profiles dropped without
    replacement."""
    con.register("changed_users", pl.DataFrame({"user_id": users}).to_arrow())
    con.execute("begin transaction")
    try:
        gone = con.execute(f"""
            select count(*) from features.user_profiles where user_id not in (select user_id from changed_users)
            and user_id not in (select user_id from ({HISTORY_DIGESTS}) where train_rows > 0)""").fetchall()[0][0]
        for table, frame in (("features.user_profiles", profiles), ("features.user_interests", interests)):
            con.execute(f"""delete from {table} where user_id in (select user_id from changed_users)
                            or user_id not in (select user_id from ({HISTORY_DIGESTS}) where train_rows > 0)""")
            con.register("incoming", frame.to_arrow())
            con.execute(f"insert into {table} by name select * from incoming")
            con.unregister("incoming")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("changed_users")
    return gone
