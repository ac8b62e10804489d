"""The fusion each full run chooses, end to end on a small generated catalogue: the published lists
are at least as good as their best route and better than plain EASE, the choice is stored with
its figures, and the test split never changes it. One run of the job on a small generated
catalogue whose text carries signal (the two-tower and EASE routes complement each other)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.test_utils import freeze_time

from recall_pipeline.core.features.user_profiles import ProfileSettings
from recall_pipeline.core.ingest import synthetic
from recall_pipeline.core.recall import route_selection
from recall_pipeline.core.recall.chosen_settings import SEARCHED, load_choice
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings
from recall_pipeline.core.recall.validation_routes import validation_routes
from recall_pipeline.definitions import build_definitions
from recall_pipeline.defs import tables
from recall_pipeline.defs.operations.run_failures import run_failure_recorder
from recall_pipeline.resources import DataSource, PipelineHome, TextEncoderResource, Warehouse
from recall_pipeline.settings import HomeLayout
from recall_pipeline_tests.ui import chromium_page, webserver

SOURCE = {"users": 250, "items": 400, "interactions": 8_000}
RUN_CONFIG = {"ops": {"recall_model": {"config": {"max_epochs": 3}}}}


def choose_again(home: HomeLayout, source: DataSource) -> dict:
    """What ``route_settings`` computes, from what its inputs read now (``tables.selection_inputs``)."""
    inputs = tables.selection_inputs(Warehouse(path=str(home.warehouse)), PipelineHome(root=str(home.root)))
    routes, left_out = validation_routes(inputs.train, inputs.catalogue, RouteSettings(), TextEncoderResource().get().encode,
                                         ProfileSettings(rating_max=source.rating_max), inputs.text_cf_setting,
                                         inputs.model_lists, inputs.cut, route_selection.DEFAULT_MAX_USERS)
    selection = route_selection.select(routes, RouteSettings(), inputs.trust)
    return {"settings": selection.settings.to_json(), "record": {**selection.record(), "left_out": left_out}}


def data_source(path) -> DataSource:
    settings = yaml.safe_load(path.read_text())
    for key in ("interactions_path", "items_path"):
        settings[key] = str(path.parent / settings[key])
    return DataSource(**settings)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion-choice")
    source = synthetic.write_source(synthetic.generate(synthetic.spec_for(**SOURCE)), root / "source", "parquet")
    home = HomeLayout(root / "home").create()
    source = data_source(source)
    defs = build_definitions(home, source)
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:  # the UI reads it below
        result = defs.resolve_job_def("recall_job").execute_in_process(run_config=RUN_CONFIG, instance=instance)
        assert result.success
        mlflow_run = [m for m in result.get_asset_materialization_events()
                      if m.asset_key.to_user_string() == "route_settings"][0].materialization.metadata["mlflow_run_id"].value
        first = json.loads(home.route_settings.read_text())
        # corrupt every test row: shuffle the test parts' items and flip their relevance
        with duckdb.connect(str(home.warehouse)) as con:
            con.execute("""
                update features.interactions_split as s set item_id = t.other, is_relevant = not s.is_relevant
                from (select user_id, item_id, timestamp,
                             lead(item_id, 7, item_id) over (order by user_id, timestamp, item_id) as other
                      from features.interactions_split where part <> 'train') as t
                where s.part <> 'train' and s.user_id = t.user_id and s.item_id = t.item_id
                  and s.timestamp = t.timestamp""")
            changed = con.execute("select count(*) from features.interactions_split where part <> 'train'").fetchone()[0]
    return home, first, choose_again(home, source), changed, mlflow_run, result.run_id


def warm_recall(home: HomeLayout, run_id: str) -> dict[str, float]:
    """Warm Recall@50 of every model the run's evaluation scored."""
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return dict(con.execute("select model, value from eval.metrics where run_id = ? and slice = 'warm' "
                                "and metric = 'recall' and k = 50", [run_id]).fetchall())


def test_final_lists_are_no_worse_than_the_best_route_and_beat_plain_ease(pipeline):
    home, *_, run_id = pipeline
    figures = warm_recall(home, run_id)
    routes = {name: value for name, value in figures.items() if name.startswith("route:")}
    assert len(routes) >= 5
    assert figures["final"] >= max(routes.values()) - 0.01, figures
    assert figures["final"] > figures["EASE"], figures


def test_the_choice_is_stored_with_every_candidate_and_served(pipeline):
    home, first, *_, run_id = pipeline
    choice = load_choice(home.route_settings)
    assert choice.how == SEARCHED and choice.record["users"] > 0
    record = choice.record
    assert set(record["routes"]) >= {"two_tower", "lm_profile", "lm_interest"}
    assert any("no recency, no window" in name for name in record["routes"])
    assert len(record["candidates"]) >= 20 and record["left_out"] == {}
    best = max(c["recall@50"] for c in record["candidates"] if c["feasible"])
    assert record["chosen"]["recall@50"] >= record["best_route_figures"]["recall@50"]
    assert record["chosen"]["recall@50"] in (best, record["best_route_figures"]["recall@50"])
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        [(served,)] = con.execute("select route_settings from recall.refreshes where run_id = ?", [run_id]).fetchall()
    assert json.loads(served)["weights"] == {n: json.loads(first["settings"])["weights"][n] for n in ROUTES}


def test_the_report_and_mlflow_show_the_choice(pipeline):
    import mlflow

    home, first, _, _, mlflow_run, _ = pipeline
    record = first["record"]
    page = home.latest_report.read_text()
    assert "Fusion chosen on the validation cut" in page and record["decision"].split(":")[0] in page
    run = mlflow.MlflowClient(f"sqlite:///{home.mlflow_db}").get_run(mlflow_run)
    assert run.data.metrics["chosen_recall_at_50"] == pytest.approx(record["chosen"]["recall@50"])
    assert run.data.params["weight_ease"] == str(json.loads(first["settings"])["weights"]["ease"])


def test_corrupting_the_test_parts_changes_no_choice(pipeline):
    """The asset's inputs, read again after every test row was corrupted, choose exactly what the
    run chose: the same settings, figures of every route and candidate, and decision."""
    _, first, again, changed, *_ = pipeline
    assert changed > 0
    assert again["settings"] == first["settings"]
    for key in ("chosen", "routes", "candidates", "decision", "floors", "ease_lambda", "left_out"):
        assert again["record"][key] == first["record"][key], key


# A planted regression: the LM history profile alone (popularity for users without history),
# pinned by config; complete lists, but far below the searched fusion on validation.
PLANTED = {"search": False, **{f"weight_{name}": 0.0 for name in ROUTES}, "weight_lm_profile": 1.0,
           "weight_popularity": 1.0}
GATED = [dg.AssetKey(name) for name in ("route_settings", "ease_model", "recall_candidates")]


@pytest.fixture(scope="module")
def gated(pipeline):
    """After the published run: the planted regression (stopped by the gate), then the same with
    the drop accepted (published)."""
    home, *_, published_run = pipeline
    source = data_source(home.root.parent / "source" / "source.yaml")
    job = build_definitions(home, source).resolve_job_def("recall_job")
    runs = {}
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        for name, accept in (("stopped", False), ("accepted", True)):
            config = {"ops": {"route_settings": {"config": {**PLANTED, "accept_drop": accept}}}}
            runs[name] = job.execute_in_process(run_config=config, instance=instance, asset_selection=GATED,
                                                raise_on_error=False)
        record_failure(home, instance, runs["stopped"].run_id)
        evaluate_freshness(home, instance, hours_later=31)  # the nightly schedule's 24 h + 6 h of grace
    return home, published_run, runs


def evaluate_freshness(home: HomeLayout, instance: dg.DagsterInstance, hours_later: float) -> None:
    """The freshness checks of the published lists, run as their sensor runs them, ``hours_later``."""
    defs = build_definitions(home)
    keys = {key for key in defs.resolve_asset_graph().asset_check_keys if key.name == "freshness_check"}
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection=keys)
    with freeze_time(datetime.now(timezone.utc) + timedelta(hours=hours_later)):
        assert job.execute_in_process(instance=instance).success


def record_failure(home: HomeLayout, instance: dg.DagsterInstance, run_id: str) -> None:
    """What the daemon's run-failure sensor does for the stopped run."""
    [failure] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder", dagster_event=failure.dagster_event, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        resources={"warehouse": Warehouse(path=str(home.warehouse))}).for_run_failure()
    run_failure_recorder(context)


def gate_of(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "lists_no_worse_than_published"]
    return evaluation


def test_the_gate_stops_a_planted_regression_and_the_previous_lists_stay(gated):
    home, published_run, runs = gated
    stopped = runs["stopped"]
    assert not stopped.success
    gate = gate_of(stopped)
    meta = {k: v.value for k, v in gate.metadata.items()}
    assert not gate.passed and meta["basis"].startswith("same cut")
    assert meta["new_recall@50"] < meta["published_recall@50"] - 0.02 and meta["upper_bound"] < 0
    assert f"{meta['new_recall@50']:.4f}" in meta["message"] and f"{meta['published_recall@50']:.4f}" in meta["message"]
    assert "--accept-drop" in meta["message"] and "accept_drop: true" in meta["message"]
    assert stopped.asset_materializations_for_node("recall_candidates") == []  # never computed
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        published = [r for (r,) in con.execute("select run_id from recall.published_runs order by published_at").fetchall()]
    assert published[0] == published_run and stopped.run_id not in published


def test_an_accepted_drop_is_published_with_its_models(gated):
    home, published_run, runs = gated
    accepted = runs["accepted"]
    assert accepted.success
    gate = gate_of(accepted)
    assert gate.passed and gate.metadata["accepted"].value is True
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        [(latest,)] = con.execute("select distinct run_id from recall.latest").fetchall()
        [(served,)] = con.execute("select route_settings from recall.refreshes where run_id = ?", [latest]).fetchall()
    assert latest == accepted.run_id
    assert json.loads(served)["weights"]["ease"] == 0.0 and json.loads(served)["weights"]["lm_profile"] == 1.0
    assert home.serving.published.current_name() == accepted.run_id


def test_the_ui_shows_the_gate_the_freshness_check_and_the_recorded_failure(gated, tmp_path):
    """In the Dagster UI (a webserver on the home, a page in headless Chromium): the gate's two
    verdicts with their figures, the lists' freshness check failing once they are overdue, and
    the stopped run in the table of recorded failures."""
    home, _, runs = gated
    stopped = gate_of(runs["stopped"]).metadata["message"].value
    accepted = gate_of(runs["accepted"]).metadata["message"].value
    with webserver(home, tmp_path / "webserver.log") as url, chromium_page() as page:
        page.goto(f"{url}/assets/route_settings?view=checks&checkDetail=lists_no_worse_than_published")
        page.get_by_role("tab", name="Execution history").click()
        history = page.locator("table").filter(has_text="Evaluation result")
        history.get_by_text(accepted).wait_for()
        rows = [row.split("\t")[0].strip() for row in history.inner_text().split("\n") if row.strip()]
        verdicts = [row for row in rows if row in ("Passed", "Failed")]
        assert verdicts[:2] == ["Passed", "Failed"], rows  # newest first: accepted, then stopped
        assert history.get_by_text(stopped).is_visible() and "--accept-drop" in stopped

        page.goto(f"{url}/assets/recall_candidates?view=checks&checkDetail=freshness_check")
        page.get_by_text("Asset is overdue for an update").wait_for()
        body = page.inner_text("body")
        latest = body[body.index("Latest execution"):body.index("Metadata", body.index("Latest execution"))]
        assert "past the allowed distance of 1 day, 6 hours" in latest and "\nFailed\n" in latest, latest

        page.goto(f"{url}/assets/run_failures")
        page.get_by_text(runs["stopped"].run_id).first.wait_for()
        body = page.inner_text("body")
        assert "route_settings: lists_no_worse_than_published" in body and "Row count" in body
