"""A failed run lands in ops.run_failures and is posted to the webhook, on a real failed run of
the pipeline (its source file is missing) and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import duckdb
import pytest
from dagster._core.events import DagsterEventType

from recall_pipeline.core.operations import run_failures
from recall_pipeline.definitions import build_definitions
from recall_pipeline.defs.operations.run_failures import run_failure_recorder
from recall_pipeline.resources import DataSource, Warehouse
from recall_pipeline.settings import HomeLayout


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (the stdlib's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Receiver.received
    finally:
        server.shutdown()
        server.server_close()


def failed_run(tmp_path):
    """recall_job on a source whose interactions file does not exist: it fails in its first step."""
    home = HomeLayout(tmp_path / "home").create()
    source = DataSource(interactions_path=str(tmp_path / "missing.csv"), items_path=str(tmp_path / "missing_items.csv"))
    instance = dg.DagsterInstance.ephemeral()
    result = build_definitions(home, source).resolve_job_def("recall_job").execute_in_process(
        instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    return home, instance, instance.get_run_by_id(result.run_id), failure.dagster_event


def sense(home, instance, run, event) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder", dagster_event=event, dagster_instance=instance, dagster_run=run,
        resources={"warehouse": Warehouse(path=str(home.warehouse))}).for_run_failure()
    run_failure_recorder(context)


def rows(home) -> list[tuple]:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(f"select run_id, job_name, steps, error, failed_at from {run_failures.TABLE}").fetchall()


def test_a_failed_run_is_recorded_once_and_posted(tmp_path, webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("RECALL_PIPELINE_FAILURE_WEBHOOK", url)
    home, instance, run, event = failed_run(tmp_path)
    sense(home, instance, run, event)
    sense(home, instance, run, event)  # a failure delivered twice is kept once
    [(run_id, job, steps, error, failed_at)] = rows(home)
    assert (run_id, job, steps) == (run.run_id, "recall_job", "raw_interactions_and_items")
    assert error == f"raw_interactions_and_items: SourceError: {tmp_path / 'missing.csv'}: file not found"
    assert failed_at.timestamp() == pytest.approx(instance.get_run_record_by_id(run.run_id).end_time, abs=1)
    # the UI shows the table as an asset, its latest materialization the failure just recorded
    shown = instance.get_latest_materialization_event(dg.AssetKey("run_failures")).asset_materialization
    assert (shown.metadata["run_id"].value, shown.metadata["steps"].value) == (run.run_id, steps)
    assert shown.metadata["dagster/row_count"].value == 1 and error in shown.metadata["error"].value
    assert len(received) == 2 and received[0]["type"] == "application/json"
    body = received[0]["body"]
    assert (body["run_id"], body["job_name"], body["steps"]) == (run.run_id, "recall_job", "raw_interactions_and_items")
    assert body["text"].startswith(f"recall_pipeline: run {run.run_id} of recall_job failed in raw_interactions_and_items: ")


def test_without_a_webhook_the_table_alone(tmp_path, webhook, monkeypatch):
    _, received = webhook
    monkeypatch.delenv("RECALL_PIPELINE_FAILURE_WEBHOOK", raising=False)
    home, instance, run, event = failed_run(tmp_path)
    sense(home, instance, run, event)
    assert len(rows(home)) == 1 and received == []


def test_the_sensor_is_on_and_watches_this_location(tmp_path):
    sensor = build_definitions(HomeLayout(tmp_path)).resolve_sensor_def("run_failure_recorder")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
