"""A feedback refresh recomputes the recall lists of the users whose history changed, and
copies everybody else's lists from the published run.

A user's lists depend on (a) their own training history (every route reads it and excludes
it), (b) the models: the serving two-tower version, the LM index and item embeddings, the
EASE model, and (c) the route settings, and (d) for users *without* history only, the
popularity of items over the whole training matrix. A feedback refresh keeps (b) and (c) as
of the last full refresh (the two-tower champion unless the retraining threshold fires, the
stored EASE model of :mod:`core.training.ease.store`, the LM index), so the lists that can
change are those of

- users whose training history changed: new feedback rows, their split moving (the last
  fifth is held out, so a new row can move an older one out of training), rows quarantined or
  released by the burst guard, and users who are new altogether. They are found by comparing a
  hash of each user's training rows (item, rating, timestamp) with the hash recorded for the
  published run (``recall.run_users``), so whatever changed a history is caught, not only the
  users named in the feedback file;
- users without training history: their popularity list follows every training row.

Everything else is unchanged and is copied in SQL. If the basis changed since the published
run (another two-tower version serves, another EASE or TextCF model, other route settings or K), every
user is recomputed. The popularity route and the popularity discount use the item counts stored
with the EASE model (those of the full refresh that fitted it), so that a discount does not make
every list stale at each feedback; a model stored without counts recomputes every user when a
discount is set. What this does not see: profile settings changed by config between runs (run the
full refresh after changing them).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from recall_pipeline.core.features.changed_users import ALL, CHANGED, HISTORY_DIGESTS
from recall_pipeline.core.training.ease.store import StoredEase, reusable_ease
from recall_pipeline.core.recall.routes import RouteSettings
from recall_pipeline.core.warehouse_sql import insert_by_name


def settings_key(settings, k: int) -> str:
    """A short checksum of the route settings and the list length."""
    return hashlib.sha256(f"{settings!r}|k={k}".encode()).hexdigest()[:16]


def recall_basis(model_version: str, ease_fit_run: str, settings, k: int) -> str:
    """What every user's lists are computed with, apart from their own history."""
    return f"{model_version}|ease:{ease_fit_run}|settings:{settings_key(settings, k)}"


@dataclass(frozen=True)
class RecallPlan:
    """Which users a recall run computes; the others' rows come from ``previous_run``."""

    users: np.ndarray | None      # sorted user ids to recompute; None: every user
    previous_run: str | None      # the published run whose other users' rows are copied
    basis: str
    reason: str
    ease: StoredEase | None = None  # the stored EASE model to score with (None: the run fits its own)
    settings: str = ""              # the route settings as JSON (RouteSettings.to_json), kept with the run

    @property
    def everyone(self) -> bool:
        return self.users is None


def latest_published_run(con: duckdb.DuckDBPyConnection) -> str | None:
    """The run ``recall.latest`` shows (None before the first publication)."""
    if not _has_table(con, "recall.published_runs"):
        return None
    rows = con.execute("select run_id from recall.published_runs order by published_at desc limit 1").fetchall()
    return rows[0][0] if rows else None


def published_route_settings(con: duckdb.DuckDBPyConnection) -> RouteSettings:
    """The route settings of the run ``recall.latest`` shows (:func:`route_settings_of`): what
    ad-hoc recall fuses with."""
    return route_settings_of(con, latest_published_run(con))


def route_settings_of(con: duckdb.DuckDBPyConnection, run_id: str | None) -> RouteSettings:
    """The route settings recall run ``run_id`` kept in ``recall.refreshes`` (the defaults for no
    run, or for a run recorded before the settings were kept with it)."""
    if run_id is None or not _has_table(con, "recall.refreshes"):
        return RouteSettings()
    if "route_settings" not in {row[0] for row in con.execute("describe recall.refreshes").fetchall()}:
        return RouteSettings()
    rows = con.execute("select route_settings from recall.refreshes where run_id = ?", [run_id]).fetchall()
    try:
        return RouteSettings.from_json(rows[0][0] if rows else None)
    except ValueError as exc:
        raise ValueError(f"recall.refreshes.route_settings of run {run_id}: {exc}") from None


def plan_run(con: duckdb.DuckDBPyConnection, run_id: str, changed_only: bool, ease_path: Path,
             model_version: str, settings: RouteSettings, k: int) -> RecallPlan:
    """The plan of a recall run, with its route settings. The EASE model is the stored one (the
    ``ease_model`` asset's) when it covers the current catalogue, and its fit settings become the
    run's; else the run fits its own in memory (stored by nobody: that is the asset's job). Full
    refresh: every user. With ``changed_only`` (a feedback refresh) and a stored model: the users
    :func:`plan_recall` finds."""
    item_ids = con.sql("select item_id from features.item_index order by item_index").pl()["item_id"].to_numpy()
    ease, why = reusable_ease(ease_path, item_ids)
    if ease is not None:
        settings = settings.with_ease_fit(*ease.fit_settings)
    return dataclasses.replace(_plan_users(con, run_id, changed_only, ease, why, model_version, settings, k),
                               settings=settings.to_json())


def _plan_users(con: duckdb.DuckDBPyConnection, run_id: str, changed_only: bool, ease: StoredEase | None,
                why: str, model_version: str, settings: RouteSettings, k: int) -> RecallPlan:
    if ease is None:
        return RecallPlan(None, None, recall_basis(model_version, run_id, settings, k),
                          f"every user is recomputed and EASE fitted in this run: {why}")
    if not changed_only:
        return RecallPlan(None, None, recall_basis(model_version, ease.fit_run, settings, k),
                          f"full refresh: every user is recomputed; EASE: {why}", ease=ease)
    plan = plan_recall(con, recall_basis(model_version, ease.fit_run, settings, k))
    if settings.popularity_discount and ease.item_counts is None:  # the fused scores follow every count
        plan = dataclasses.replace(plan, users=None, previous_run=None,
                                   reason="a popularity discount is set: every user is recomputed")
    return dataclasses.replace(plan, ease=ease, reason=f"{plan.reason}; EASE: {why}")


def plan_recall(con: duckdb.DuckDBPyConnection, basis: str) -> RecallPlan:
    """The users whose training history changed since the published run and users without
    history, if the published run was computed on the same basis; else every user."""
    previous = latest_published_run(con)
    if previous is None:
        return RecallPlan(None, None, basis, "no published run yet: every user is computed")
    rows = (con.execute("select basis from recall.refreshes where run_id = ?", [previous]).fetchall()
            if _has_table(con, "recall.refreshes") else [])
    row = rows[0] if rows else None
    if row is None:
        return RecallPlan(None, None, basis, f"the published run {previous} has no recorded basis: every user")
    if row[0] != basis:
        return RecallPlan(None, None, basis, f"the basis changed since the published run {previous} "
                                             f"({row[0]} -> {basis}): every user is recomputed")
    users = con.sql(f"""
        with now as ({HISTORY_DIGESTS}),
             before as (select user_id, history_hash from recall.run_users where run_id = ?)
        select now.user_id from now left join before using (user_id)
        where before.user_id is null or before.history_hash <> now.history_hash or now.train_rows = 0
        order by now.user_id""", params=[previous]).pl()["user_id"].to_numpy()
    return RecallPlan(users, previous, basis, f"{len(users)} users whose training history changed since "
                                              f"{previous} or who have none (popularity lists)")


def carry_forward_untouched(con: duckdb.DuckDBPyConnection, run_id: str, previous_run: str,
                            recomputed_users: np.ndarray) -> int:
    """Copy into ``run_id`` the rows of ``previous_run`` of every current user not recomputed
    (call inside the transaction that stores the run's own rows). Returns the users copied."""
    con.register("recomputed_users", pl.DataFrame({"user_id": recomputed_users}).to_arrow())
    try:
        con.execute("""
            insert into recall.candidates by name
            select * replace (?::varchar as run_id) from recall.candidates c
            where c.run_id = ? and c.user_id in (select user_id from features.user_index)
              and c.user_id not in (select user_id from recomputed_users)""", [run_id, previous_run])
        return con.execute("""
            select count(distinct user_id) from recall.candidates
            where run_id = ? and user_id not in (select user_id from recomputed_users)""", [run_id]).fetchall()[0][0]
    finally:
        con.unregister("recomputed_users")


@dataclass(frozen=True)
class StoredRun:
    recomputed_users: int
    copied_users: int
    rows: int


def store_run(con: duckdb.DuckDBPyConnection, run_id: str, parts: Iterable[pl.DataFrame],
              plan: RecallPlan) -> StoredRun:
    """In one transaction: the run's computed rows (``parts``, inserted one at a time, so that
    the rows of every user are never held at once; a retried run's replaced), the copied rows
    of every other user, each user's history hash and the run's record (``recall.refreshes``)."""
    con.execute("begin transaction")
    try:
        for table in ("recall.candidates", "recall.run_users", "recall.refreshes"):
            if _has_table(con, table):
                con.execute(f"delete from {table} where run_id = ?", [run_id])
        computed = _insert_parts(con, parts)
        copied = 0 if plan.everyone else carry_forward_untouched(con, run_id, plan.previous_run,
                                                                 plan.users)
        con.register("computed_users", pl.DataFrame({"user_id": computed}).to_arrow())
        insert_by_name(con, "recall.run_users", con.sql(f"""
            select ?::varchar as run_id, d.user_id, d.history_hash,
                   d.user_id in (select user_id from computed_users) as recomputed
            from ({HISTORY_DIGESTS}) d""", params=[run_id]).pl())
        con.unregister("computed_users")
        rows = con.execute("select count(*) from recall.candidates where run_id = ?", [run_id]).fetchall()[0][0]
        insert_by_name(con, "recall.refreshes", pl.DataFrame({
            "run_id": [run_id], "mode": [ALL if plan.everyone else CHANGED], "basis": [plan.basis],
            "previous_run": [plan.previous_run], "recomputed_users": [len(computed)],
            "copied_users": [copied], "rows": [rows], "reason": [plan.reason],
            "route_settings": [plan.settings or None],
            "created_at": [datetime.now(timezone.utc).replace(tzinfo=None)]},
            schema_overrides={"previous_run": pl.String, "route_settings": pl.String}))
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return StoredRun(len(computed), copied, rows)


def _insert_parts(con: duckdb.DuckDBPyConnection, parts: Iterable[pl.DataFrame]) -> pl.Series:
    """Insert the non-empty parts into ``recall.candidates`` (only the first part when all are
    empty: it creates the table with its columns); returns the users they hold."""
    users, first = [], None
    for part in parts:
        first = part if first is None else first
        if part.height:
            insert_by_name(con, "recall.candidates", part)
            users.append(part["user_id"].unique())
    if users:
        return pl.concat(users).unique()
    if first is None:
        raise ValueError("no candidate parts to store (a shard writes at least one, maybe empty)")
    insert_by_name(con, "recall.candidates", first)
    return first["user_id"]


@dataclass(frozen=True)
class ComputedSummary:
    """What a run computed, read back from the warehouse: its rows for the recomputed users,
    their count per route, the distinct items among them, and the first rows."""

    rows: int
    route_shares: pl.DataFrame
    distinct_items: int
    preview: pl.DataFrame


def computed_summary(con: duckdb.DuckDBPyConnection, run_id: str, columns: list[str]) -> ComputedSummary:
    """The :class:`ComputedSummary` of ``run_id`` (``columns``: those the preview shows)."""
    computed = """from recall.candidates where run_id = $run and user_id in
                  (select user_id from recall.run_users where run_id = $run and recomputed)"""
    shares = con.sql(f"select route, count(*) as len {computed} group by route order by route",
                     params={"run": run_id}).pl()
    [(rows, items)] = con.execute(f"select count(*), count(distinct item_id) {computed}", {"run": run_id}).fetchall()
    preview = con.sql(f"select {', '.join(columns)} {computed} order by user_id, rank limit 10",
                      params={"run": run_id}).pl()
    return ComputedSummary(rows, shares, items, preview)


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    return bool(con.execute("select count(*) from information_schema.tables where table_schema = ? "
                            "and table_name = ?", [schema, name]).fetchall()[0][0])
