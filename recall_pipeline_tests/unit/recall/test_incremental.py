"""Which users a feedback refresh recomputes, and the copy of everyone else's rows, on a small
warehouse built by hand (the SQL the recall step runs, without the models)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import polars as pl

from recall_pipeline.core.features.changed_users import profiles_to_recompute, replace_profiles_of
from recall_pipeline.core.recall import incremental
from recall_pipeline.core.recall.published_tables import check_and_publish

K = 2


def warehouse(train: list[tuple[int, int, float, str]], users: list[int]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create schema features")
    split = pl.DataFrame(train, schema=["user_id", "item_id", "rating", "timestamp"], orient="row").with_columns(
        pl.col("timestamp").str.to_datetime(), part=pl.lit("train"))
    con.register("split", split.to_arrow())
    con.execute("create table features.interactions_split as select * from split")
    con.execute("create table features.user_index as select unnest(?::bigint[]) as user_id", [users])
    con.execute("create table features.item_index as select range as item_id, range as item_index from range(10)")
    return con


def frame(run_id: str, users: list[int], first_item: int) -> pl.DataFrame:
    """K rows per user, items not in anyone's training history here."""
    return pl.DataFrame({"run_id": run_id, "user_id": np.repeat(users, K), "rank": np.tile(np.arange(1, K + 1), len(users)),
                         "item_id": np.tile(np.arange(first_item, first_item + K), len(users)), "score": 1.0,
                         "route": np.where(np.tile(np.arange(K), len(users)) == 0, "ease", "two_tower"),
                         "created_at": datetime(2026, 1, 1)}).with_columns(pl.col("rank").cast(pl.Int32))


def test_a_feedback_refresh_recomputes_the_changed_users_and_copies_the_others():
    rows = [(1, 0, 4.0, "2020-01-01"), (2, 0, 5.0, "2020-01-01"), (2, 1, 3.0, "2020-01-02"), (3, 1, 2.0, "2020-01-03")]
    con = warehouse(rows, [1, 2, 3, 4])  # user 4 has no training history
    full = incremental.RecallPlan(None, None, "basis-1", "full")
    stored = incremental.store_run(con, "full", [frame("full", [1, 2, 3, 4], 5)], full)
    assert (stored.recomputed_users, stored.copied_users, stored.rows) == (4, 0, 8)
    check_and_publish(con, "full", K)
    assert incremental.latest_published_run(con) == "full"

    # feedback: user 2 rates item 3, user 5 is new; user 1's and 3's histories are unchanged
    con.execute("insert into features.interactions_split values (2, 3, 5.0, '2020-02-01', 'train'), "
                "(5, 2, 4.0, '2020-02-01', 'train')")
    con.execute("insert into features.user_index values (5)")
    plan = incremental.plan_recall(con, "basis-1")
    assert plan.previous_run == "full" and plan.users.tolist() == [2, 4, 5]  # 4: no history (popularity)
    # the shards' parts one at a time, an empty one among them
    parts = [frame("feedback", [2], 7), frame("feedback", [], 7), frame("feedback", [4, 5], 7)]
    stored = incremental.store_run(con, "feedback", iter(parts), plan)
    assert (stored.recomputed_users, stored.copied_users, stored.rows) == (3, 2, 10)
    summary = incremental.computed_summary(con, "feedback", ["user_id", "rank", "item_id"])
    assert (summary.rows, summary.distinct_items) == (6, 2)  # the recomputed users' rows only
    assert summary.route_shares.rows() == [("ease", 3), ("two_tower", 3)]
    assert summary.preview.rows() == [(2, 1, 7), (2, 2, 8), (4, 1, 7), (4, 2, 8), (5, 1, 7), (5, 2, 8)]
    lists = dict(con.execute("select user_id, list(item_id order by rank) from recall.candidates "
                             "where run_id = 'feedback' group by user_id").fetchall())
    assert lists == {1: [5, 6], 2: [7, 8], 3: [5, 6], 4: [7, 8], 5: [7, 8]}
    assert check_and_publish(con, "feedback", K) == (0, 0, True)
    recomputed = con.execute("select user_id from recall.run_users where run_id = 'feedback' and recomputed "
                             "order by user_id").fetchall()
    assert recomputed == [(2,), (4,), (5,)]

    # a retried run replaces its own rows; nothing changed since: only the user without history
    again = incremental.plan_recall(con, "basis-1")
    assert again.previous_run == "feedback" and again.users.tolist() == [4]
    # another basis (another two-tower version serves): every user
    assert incremental.plan_recall(con, "basis-2").users is None


def test_profiles_are_rebuilt_for_changed_histories_and_dropped_for_lost_ones():
    con = warehouse([(1, 0, 4.0, "2020-01-01"), (2, 1, 3.0, "2020-01-02")], [1, 2])
    assert profiles_to_recompute(con) is None  # no profiles stored yet: every user
    digests = con.sql(f"select user_id, history_hash from ({incremental.HISTORY_DIGESTS})").pl()
    profiles = digests.with_columns(history_size=pl.lit(1))
    con.register("p", profiles.to_arrow())
    con.execute("create table features.user_profiles as select * from p")
    con.execute("create table features.user_interests as select user_id, 0 as interest from p")
    assert profiles_to_recompute(con).tolist() == []
    con.execute("update features.interactions_split set rating = 1.0 where user_id = 1")
    con.execute("delete from features.interactions_split where user_id = 2")  # user 2 lost their history
    assert profiles_to_recompute(con).tolist() == [1]
    new = con.sql(f"select user_id, history_hash, 2 as history_size from ({incremental.HISTORY_DIGESTS}) "
                  "where user_id = 1").pl()
    assert replace_profiles_of(con, np.array([1]), new, pl.DataFrame({"user_id": [1], "interest": [0]})) == 1
    assert con.execute("select user_id, history_size from features.user_profiles").fetchall() == [(1, 2)]
    assert con.execute("select user_id from features.user_interests").fetchall() == [(1,)]


def test_a_refresh_that_changed_no_history_copies_every_user():
    con = warehouse([(1, 0, 4.0, "2020-01-01"), (2, 1, 3.0, "2020-01-02")], [1, 2])
    incremental.store_run(con, "full", [frame("full", [1, 2], 5)], incremental.RecallPlan(None, None, "b", "full"))
    check_and_publish(con, "full", K)
    plan = incremental.plan_recall(con, "b")  # e.g. every feedback row was quarantined
    assert plan.users.tolist() == []
    stored = incremental.store_run(con, "feedback", [frame("feedback", [], 7)], plan)
    assert (stored.recomputed_users, stored.copied_users, stored.rows) == (0, 2, 4)
    assert check_and_publish(con, "feedback", K) == (0, 0, True)


def test_a_run_keeps_its_route_settings_through_the_shards_to_its_record(tmp_path):
    """What the evaluation scores each route with (``recall.refreshes.route_settings``) is what the
    run's plan was made with, carried through the plan the shards and the merge step read."""
    from pathlib import Path

    from recall_pipeline.core.recall.recall_shards import export_plan, exported_plan
    from recall_pipeline.core.recall.routes import RouteSettings
    from recall_pipeline.core.shards import ShardStore

    con = warehouse([(1, 0, 4.0, "2020-01-01")], [1])
    settings = RouteSettings(ease_lambda=50.0, ease_window=0, weights={**RouteSettings().weights, "ease": 2.0})
    plan = incremental.plan_run(con, "full", False, Path(tmp_path / "no-ease.npz"), "v1", settings, K)
    store = ShardStore(str(tmp_path / "store"), "recall_candidates")
    export_plan(store, "full", plan)
    incremental.store_run(con, "full", [frame("full", [1], 5)], exported_plan(store, "full"))
    stored = con.execute("select route_settings from recall.refreshes where run_id = 'full'").fetchone()[0]
    assert RouteSettings.from_json(stored) == settings != RouteSettings()


def test_route_settings_round_trip_and_an_unknown_field_is_named():
    import json

    import pytest

    from recall_pipeline.core.recall.routes import RouteSettings

    settings = RouteSettings(depth=50, rrf_c=30.0, weights={"two_tower": 0.5, "ease": 2.0})
    assert RouteSettings.from_json(settings.to_json()) == settings
    assert RouteSettings.from_json(None) == RouteSettings.from_json("") == RouteSettings()
    later = json.dumps({**json.loads(settings.to_json()), "sequence_weight": 0.5})
    with pytest.raises(ValueError, match="does not know: sequence_weight"):
        RouteSettings.from_json(later)


def test_the_published_runs_settings_are_read_and_a_bad_record_names_the_run():
    import pytest

    from recall_pipeline.core.recall.routes import RouteSettings

    con = warehouse([(1, 0, 4.0, "2020-01-01")], [1])
    assert incremental.published_route_settings(con) == RouteSettings()  # nothing published yet
    settings = RouteSettings(ease_lambda=50.0)
    plan = incremental.RecallPlan(None, None, "b", "full", settings=settings.to_json())
    incremental.store_run(con, "full", [frame("full", [1], 5)], plan)
    check_and_publish(con, "full", K)
    assert incremental.published_route_settings(con) == settings
    con.execute("update recall.refreshes set route_settings = '{\"later_knob\": 1}'")
    with pytest.raises(ValueError, match="route_settings of run full: .*does not know: later_knob"):
        incremental.published_route_settings(con)


def test_a_run_scores_with_the_stored_ease_model_and_takes_its_fit_settings(tmp_path):
    """The ease_model asset's model serves the full refresh too (no second solve on the side),
    and its fit settings become the run's; a catalogue it does not cover makes the run fit its own."""
    import scipy.sparse as sp

    from recall_pipeline.core.recall.routes import RouteSettings
    from recall_pipeline.core.training.ease.model import fit_ease
    from recall_pipeline.core.training.ease.store import save_ease

    con = warehouse([(1, 0, 4.0, "2020-01-01"), (2, 1, 5.0, "2020-01-02")], [1, 2])
    path = tmp_path / "ease.npz"
    x = sp.csr_matrix(np.eye(2, 10))
    save_ease(fit_ease(x, 7.0)[1], path, np.arange(10), "fit-run", 123, np.ones(10, dtype=np.int64))
    asked = RouteSettings(ease_lambda=200.0, ease_max_items=5000, ease_window=20, ease_window_weight=0.7)

    plan = incremental.plan_run(con, "full-run", False, path, "v1", asked, K)
    assert plan.ease is not None and plan.ease.fit_run == "fit-run" and plan.everyone
    used = asked.with_ease_fit(*plan.ease.fit_settings)
    assert RouteSettings.from_json(plan.settings) == used
    assert (used.ease_lambda, used.ease_max_items, used.ease_window, used.ease_window_weight) == (7.0, 123, 0, 0.0)
    assert plan.basis == incremental.recall_basis("v1", "fit-run", used, K)

    con.execute("insert into features.item_index values (10, 10)")  # an item the model never saw
    refit = incremental.plan_run(con, "full-run", False, path, "v1", asked, K)
    assert refit.ease is None and "catalogue changed" in refit.reason
    assert RouteSettings.from_json(refit.settings) == asked
    assert refit.basis == incremental.recall_basis("v1", "full-run", asked, K)
