"""A feedback refresh costs what the feedback touches: on a slice of the bundled data, after a
full refresh, a feedback file for one known user and one new user recomputes only their lists
(and those of users without history), copies everyone else's rows from the published run,
publishes, and defers the evaluation unless configured to run it."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from recall_pipeline.definitions import build_definitions
from recall_pipeline.defs.jobs import feedback_run_config
from recall_pipeline.resources import DataSource
from recall_pipeline.settings import HomeLayout

SAMPLE_USERS = 8
NEW_USER = 999_999
ROW = ("user_id", "rank", "item_id", "score", "route", "model_version",
       "rank_two_tower", "rank_lm_profile", "rank_lm_interest", "rank_ease", "rank_popularity")


def sql(path, query: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def lists(path, run_id: str) -> dict:
    """user -> the run's rows (without run id and time), in rank order."""
    out: dict = {}
    for row in sql(path, f"select {', '.join(ROW)} from recall.candidates where run_id = ? order by user_id, rank",
                   [run_id]):
        out.setdefault(row[0], []).append(row)
    return out


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory):
    home = HomeLayout(tmp_path_factory.mktemp("home")).create()
    source = DataSource(sample_users=SAMPLE_USERS)
    with dg.instance_for_test() as instance:
        full = build_definitions(home, source).resolve_job_def("recall_job").execute_in_process(instance=instance)
        assert full.success
        user = sql(home.warehouse, "select min(user_id) from features.user_index")[0][0]
        seen = {i for (i,) in sql(home.warehouse, "select item_id from clean.interactions where user_id = ?", [user])}
        new_items = [i for (i,) in sql(home.warehouse, "select item_id from features.item_sides "
                                                       "where not is_cold order by item_id") if i not in seen][:3]
        # rated long ago: they land in the user's training part, so recall must leave them out
        rows = [f"{user},{item},5,1990-01-0{n + 1}T10:00:00" for n, item in enumerate(new_items)]
        rows += [f"{NEW_USER},{item},4,2016-01-0{n + 1}T10:00:00" for n, item in enumerate(new_items)]
        path = home.inbox / "feedback.csv"
        path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
        texts_before = dict(sql(home.warehouse, "select user_id, profile_text from features.user_profiles"))
        deferred = build_definitions(home, source, feedback_evaluation="defer").resolve_job_def(
            "feedback_refresh_job").execute_in_process(instance=instance, run_config=feedback_run_config([str(path)]))
        assert deferred.success
        published_after_deferred = {u: r for u, r in lists(home.published, deferred.run_id).items()}
        texts_after = dict(sql(home.warehouse, "select user_id, profile_text from features.user_profiles"))
        again = home.inbox / "more.csv"
        again.write_text(f"user_id,item_id,rating,timestamp\n{user},{new_items[0]},1,1990-02-01T10:00:00\n")
        config = feedback_run_config([str(again)])  # and this time the interest texts are encoded
        config["ops"]["user_profiles"] = {"config": {"interest_text_when_changed": "encode"}}
        evaluated = build_definitions(home, source, feedback_evaluation="run").resolve_job_def(
            "feedback_refresh_job").execute_in_process(instance=instance, run_config=config)
        assert evaluated.success
    return dict(home=home, full=full, deferred=deferred, evaluated=evaluated, user=user, new_items=new_items,
                published_after_deferred=published_after_deferred, texts_before=texts_before, texts_after=texts_after)


def test_only_the_touched_users_are_recomputed_and_the_others_copied(refreshed):
    home, full, deferred, user = (refreshed[k] for k in ("home", "full", "deferred", "user"))
    before, after = lists(home.warehouse, full.run_id), lists(home.warehouse, deferred.run_id)
    recomputed = {u for (u,) in sql(home.warehouse, "select user_id from recall.run_users "
                                                   "where run_id = ? and recomputed", [deferred.run_id])}
    without_history = {u for (u,) in sql(home.warehouse, """select u.user_id from features.user_index u where not exists
        (select 1 from features.interactions_split s where s.user_id = u.user_id and s.part = 'train')""")}
    assert recomputed == {user, NEW_USER} | without_history
    assert set(after) == set(before) | {NEW_USER}  # recall.latest stays complete
    for other in set(before) - recomputed:
        assert after[other] == before[other], f"user {other}'s copied rows differ"
    assert [r[2] for r in after[user]] != [r[2] for r in before[user]]
    assert not set(refreshed["new_items"]) & {r[2] for r in after[user]}  # now training items
    assert len(after[NEW_USER]) == 100
    [(mode, n_recomputed, copied, previous)] = sql(home.warehouse, """select mode, recomputed_users, copied_users,
        previous_run from recall.refreshes where run_id = ?""", [deferred.run_id])
    assert (mode, n_recomputed, copied, previous) == ("changed", len(recomputed), len(before) - len(
        recomputed - {NEW_USER}), full.run_id)
    events = deferred.asset_materializations_for_node("recall_candidates")
    metadata = {k: v.value for k, v in events[0].metadata.items()}
    assert (metadata["users_recomputed"], metadata["users_copied"]) == (n_recomputed, copied)
    checks = {e.check_name: e.passed for e in deferred.get_asset_check_evaluations()}
    assert checks["every_user_has_candidates"] and checks["no_training_item_recalled"]


def test_the_profiles_of_the_touched_users_only_are_rebuilt(refreshed):
    deferred, evaluated, user = refreshed["deferred"], refreshed["evaluated"], refreshed["user"]
    metadata = {k: v.value for k, v in deferred.asset_materializations_for_node("user_profiles")[0].metadata.items()}
    assert metadata["profiles_built"] == 2 and metadata["dagster/row_count"] == SAMPLE_USERS + 1
    # by default the rebuilt profiles keep their interest text (the LM is not loaded) until the
    # next full refresh; a new user has none yet
    assert metadata["interest_text"].startswith("kept")
    before, after = refreshed["texts_before"], refreshed["texts_after"]
    assert after == {**before, NEW_USER: None} and after[user] is not None
    encoded = {k: v.value for k, v in evaluated.asset_materializations_for_node("user_profiles")[0].metadata.items()}
    assert encoded["interest_text"] == "encoded" and encoded["profiles_built"] == 1


def test_the_published_copy_shows_the_new_lists_and_the_last_evaluation(refreshed):
    home, full, deferred = refreshed["home"], refreshed["full"], refreshed["deferred"]
    published = refreshed["published_after_deferred"]
    assert published == lists(home.warehouse, deferred.run_id)
    # deferred: no evaluation in this run; the published figures are the full refresh's
    assert deferred.asset_materializations_for_node("evaluation_report") == []
    assert sql(home.warehouse, "select count(*) from eval.metrics where run_id = ?", [deferred.run_id]) == [(0,)]
    evaluated = refreshed["evaluated"]
    assert evaluated.asset_materializations_for_node("evaluation_report")  # configured to run: it runs
    runs = {r for (r,) in sql(home.published, "select distinct run_id from eval.metrics")}
    assert runs == {full.run_id, evaluated.run_id}
    assert sql(home.published, "select distinct run_id from recall.latest") == [(evaluated.run_id,)]
    assert sql(home.published, "select mode from recall.refreshes order by created_at") == [
        ("all",), ("changed",), ("changed",)]
