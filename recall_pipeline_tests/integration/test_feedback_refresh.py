"""A feedback refresh costs what the feedback touches: on a slice of the bundled data, after a
full refresh (and a second one whose check fails, after writing other models), a feedback file
for one known user and one new user recomputes only their lists (and those of users without
history) with the models the published lists used, copies everyone else's rows from the
published run, publishes, and defers the evaluation unless configured to run it."""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pytest

from recall_pipeline import cli
from recall_pipeline.core.evaluation.evaluation_report import route_scorers
from recall_pipeline.core.recall import published_tables
from recall_pipeline.core.recall.chosen_settings import load_choice
from recall_pipeline.core.recall.routes import fit_ease_route
from recall_pipeline.core.recall.serving_version import EASE, ROUTE_SETTINGS, read_manifest
from recall_pipeline.core.training.ease.store import load_ease
from recall_pipeline.definitions import build_definitions
from recall_pipeline.defs import tables
from recall_pipeline.defs.jobs import feedback_run_config
from recall_pipeline.resources import DataSource, PipelineHome, Warehouse
from recall_pipeline.settings import HOME_ENV, HomeLayout

SAMPLE_USERS = 8
NEW_USER = 999_999
# the failed refresh's own choices: another EASE regularisation and a pinned fusion
FAILED_LAMBDA = 37.0
FAILED_CONFIG = {"ops": {"ease_model": {"config": {"lam": FAILED_LAMBDA}},
                         "route_settings": {"config": {"search": False, "popularity_discount": 0.5}}}}
FAILED_ASSETS = [dg.AssetKey(name) for name in ("text_cf_model", "route_settings", "ease_model", "recall_candidates")]
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
        full_ease = load_ease(home.serving.current_or_none() / EASE)
        with pytest.MonkeyPatch.context() as patch:  # the next refresh's lists fail their check
            patch.setattr(published_tables, "check_and_publish", lambda con, run_id, k: (1, 0, False))
            failed = build_definitions(home, source).resolve_job_def("recall_job").execute_in_process(
                instance=instance, run_config=FAILED_CONFIG, asset_selection=FAILED_ASSETS, raise_on_error=False)
        assert not failed.success
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
    return dict(home=home, full=full, failed=failed, full_ease=full_ease, deferred=deferred, evaluated=evaluated,
                user=user, new_items=new_items,
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
    # every computed run is recorded; the failed one was never published
    failed = refreshed["failed"]
    assert sql(home.published, "select run_id, mode from recall.refreshes order by created_at") == [
        (full.run_id, "all"), (failed.run_id, "all"), (deferred.run_id, "changed"), (evaluated.run_id, "changed")]
    assert sql(home.published, "select run_id from recall.published_runs order by published_at") == [
        (full.run_id,), (deferred.run_id,), (evaluated.run_id,)]


def test_a_failed_refresh_leaves_the_published_version_serving(refreshed, monkeypatch, capsys):
    home, full, failed = refreshed["home"], refreshed["full"], refreshed["failed"]
    # the failed refresh wrote its own models; none of them serves
    assert load_ease(home.ease_model).model.lam == FAILED_LAMBDA
    merge = {k: v.value for k, v in failed.asset_materializations_for_node("recall_candidates")[0].metadata.items()} \
        if failed.asset_materializations_for_node("recall_candidates") else {}
    assert merge.get("published", False) is False
    assert not (home.serving.pending_root / failed.run_id).exists()
    # the feedback refreshes served the full refresh's EASE model (their basis names its fit)
    for run in (refreshed["deferred"], refreshed["evaluated"]):
        [(basis,)] = sql(home.warehouse, "select basis from recall.refreshes where run_id = ?", [run.run_id])
        assert f"ease:{full.run_id}" in basis
    version = home.serving.current_or_none()
    assert read_manifest(version)["run_id"] == refreshed["evaluated"].run_id
    served = load_ease(version / EASE)
    assert served.fit_run == full.run_id and served.model.lam != FAILED_LAMBDA
    # ad-hoc recall fuses the version's EASE model (the published settings fit it: not left out)
    monkeypatch.setenv(HOME_ENV, str(home.root))
    liked = [str(i) for i in refreshed["new_items"][:2]]
    assert cli.main(["recall", "--items", ",".join(liked), "-k", "5"]) == 0
    out, err = capsys.readouterr()
    assert "EASE route is left out" not in err
    # it votes where the published version's choice weighs the route
    assert ("ease#" in out) == (load_choice(version / ROUTE_SETTINGS).settings.weights["ease"] > 0)


def test_ad_hoc_recall_discounts_with_the_counts_the_lists_used(refreshed):
    """The version's EASE model keeps the item counts of its fit, which the feedback refreshes'
    lists were discounted with; today's matrix has more rows."""
    home = refreshed["home"]
    version = home.serving.current_or_none()
    ids, vectors, encoder = tables.item_vectors(Warehouse(path=str(home.warehouse)))
    from recall_pipeline.core.recall.serving_version import ServingParts

    served = cli._served_models(home, ServingParts.of_version(version), cli.SERVED, ids, vectors, encoder)
    counts, stored = served[6], load_ease(version / EASE).item_counts
    assert np.array_equal(counts, stored) and np.array_equal(stored, refreshed["full_ease"].item_counts)
    assert not np.array_equal(counts, tables.rating_matrix(Warehouse(path=str(home.warehouse))).item_counts())


def test_the_evaluation_scores_the_ease_model_the_lists_used(refreshed):
    home = refreshed["home"]
    inputs = tables.evaluation_inputs(Warehouse(path=str(home.warehouse)), PipelineHome(root=str(home.root)))
    assert inputs.candidates_run_id == refreshed["evaluated"].run_id
    rows = np.flatnonzero(np.diff(inputs.rm.matrix.indptr) > 0)[:4]
    served = refreshed["full_ease"].model
    weighted = inputs.rm.recency_weighted(inputs.route_settings.ease_recency_tau,
                                          inputs.route_settings.ease_recency_floor)
    expected = served.scores(weighted[rows], binarize=False)
    assert np.allclose(route_scorers(inputs)["ease"](rows), expected)
    refit = fit_ease_route(inputs.rm, inputs.route_settings).scores(weighted[rows], binarize=False)
    assert not np.allclose(refit, expected)  # a refit on today's matrix is another model


def test_the_champion_is_judged_again_on_the_feedback_no_version_trained_on(refreshed):
    """After feedback, the current holdout holds interactions no version trained on: the job
    scores the champion on them (and would move the alias to a strictly better version)."""
    import mlflow

    from recall_pipeline.core.training import model_registry

    home = refreshed["home"]
    with dg.instance_for_test() as instance:
        result = build_definitions(home, DataSource(sample_users=SAMPLE_USERS)).resolve_job_def(
            "rejudge_champion_job").execute_in_process(instance=instance)
    assert result.success
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = {k: v.value for k, v in event.event_specific_data.metadata.items()}
    assert meta["champion_before"] == meta["champion_after"] == "1" and meta["users"] > 0
    client = mlflow.MlflowClient(f"sqlite:///{home.mlflow_db}")
    tags = client.get_model_version(model_registry.MODEL_NAME, "1").tags
    assert float(tags["rejudged_judged_recall_at_50"]) == pytest.approx(meta["v1_recall@50"], abs=1e-5)
