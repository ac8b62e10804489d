"""The production layout of docker/, run on this machine: its commands and settings, with hosts,
ports and paths made local, materialize the whole graph on a small source, and the results equal
those of the embedded default (DuckDB, SQLite and local folders in one home).

What runs (compose.yaml's services): PostgreSQL for Dagster's run, event and schedule storage and
for MLflow's backend store (two databases made for the test and dropped after it), the MLflow
tracking server, the code server over gRPC, the dagster-daemon on docker/dagster.yaml (queued run
coordinator, the recovering run launcher, run monitoring, the sensor), and, when ``EXECUTOR`` is
``celery``, a Celery worker on the Redis broker. The run is submitted with ``dagster job launch``:
it is queued, and the daemon dequeues it and launches it through the code server, the path of a
run started from the UI, a schedule or a sensor in production.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
import yaml

from recall_pipeline.core.ingest import synthetic
from recall_pipeline.core.training import model_registry
from recall_pipeline.runtime.run_recovery import LAUNCHER_HOST_TAG
from recall_pipeline.settings import HOME_ENV, SOURCE_ENV, HomeLayout
from recall_pipeline_tests.postgres import (
    DOCKER, fresh_database, instance_env, query, requires_postgres, sqlalchemy_url, tables, write_docker_instance,
)
from recall_pipeline_tests.subprocesses import BIN, ROOT, Process, free_port, server, wait_for_http

pytestmark = requires_postgres

# The one switch for the steps' executor (recall_pipeline.defs.executors): "celery" runs them on
# the worker service's command through Redis on 127.0.0.1 (databases REDIS_DB and REDIS_DB + 1).
EXECUTOR = "celery"
REDIS_DB = 7
# a queue of this test's own, so that no other worker on the same broker takes its steps
QUEUE = f"recall-production-layout-{uuid.uuid4().hex[:8]}"
# A small generated source (the same files for both runs) and a short training: the fixed costs
# (starting the servers, loading the language model) dominate either way.
SOURCE = {"users": 40, "items": 200, "interactions": 1500}
RUN_CONFIG = {"ops": {"recall_model": {"config": {"max_epochs": 2}}}}
RUN_TIMEOUT = 480  # seconds, for both runs together (they run side by side)
QUEUED_LIMIT = 120  # seconds a run may wait in the queue for the daemon to launch it
LOCATION = "recall_pipeline"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
# what only exists inside compose's network and containers
CONTAINER_ONLY = re.compile(r"://([^/@\s]*@)?(" + "|".join(COMPOSE["services"]) + r")([:/]|$)|^/data\b|^/opt/")
# production-only settings that the embedded default must not see
PRODUCTION_ONLY = re.compile(r"^(DAGSTER_POSTGRES_|DAGSTER_COMPUTE_LOGS_DIR|RECALL_PIPELINE_(MLFLOW_URI|EXECUTOR|CELERY_))")

EMBEDDED_RUN = """
import json, sys
import dagster as dg
from recall_pipeline.definitions import build_definitions
from recall_pipeline.settings import home_layout

home = home_layout().create()
job = build_definitions(home).resolve_job_def("recall_job")
with dg.DagsterInstance.get() as instance:
    result = job.execute_in_process(instance=instance, run_config=json.loads(sys.argv[1]), raise_on_error=False)
print(f"embedded run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}", flush=True)
sys.exit(0 if result.success else 1)
"""


def compose_command(service: str, **options: str) -> list[str]:
    """The service's command from compose.yaml, with the value after each given option replaced
    (``h="127.0.0.1"`` replaces the argument after ``-h``)."""
    args = shlex.split(COMPOSE["services"][service]["command"])
    for flag, value in options.items():
        position = args.index(f"-{flag}")  # ValueError: compose.yaml no longer passes the option
        args[position + 1] = value
    return args


def compose_env(service: str, local: dict[str, str]) -> dict[str, str]:
    """The service's environment from compose.yaml with ``local`` values laid over it (only for
    settings that compose.yaml makes); fails if a setting would still name a container's host or
    path."""
    env = {key: str(value) for key, value in COMPOSE["services"][service].get("environment", {}).items()}
    missing = set(local) - set(env)
    assert not missing, f"compose.yaml's {service} service does not set {sorted(missing)}"
    env.update(local)
    unmapped = {key: value for key, value in env.items() if CONTAINER_ONLY.search(value)}
    assert not unmapped, f"compose.yaml's {service} settings with no local value in this test: {unmapped}"
    # the image has its commands on PATH; dagster-celery starts `celery` by name
    return {**os.environ, **env, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}


def wait_for_run(instance: dg.DagsterInstance, run_id: str, daemon: Process, deadline: float) -> dg.DagsterRun:
    """The run once it has ended; fails early if the daemon dies or leaves it queued."""
    ended = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    queued_since, run = time.monotonic(), None
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None, f"run {run_id} is not in the instance's run storage"
        if run.status in ended:
            return run
        assert daemon.popen.poll() is None, f"the daemon exited:\n{daemon.output()[-4000:]}"
        if run.status != dg.DagsterRunStatus.QUEUED:
            queued_since = time.monotonic()
        assert time.monotonic() - queued_since < QUEUED_LIMIT, f"still queued:\n{daemon.output()[-4000:]}"
        time.sleep(1)
    raise AssertionError(f"run {run_id} not ended ({run and run.status.value}) after {RUN_TIMEOUT} s")


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type={
        dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}).records
    return [record.event_log_entry.message[:2000] for record in records]


@dataclass
class Layout:
    dagster_db: str
    mlflow_db: str
    mlflow_url: str
    run_id: str
    production: HomeLayout
    embedded: HomeLayout
    daemon_log: str
    worker_log: str
    seconds: dict[str, float]


class Services:
    """The processes the test starts, each logging to ``<root>/<name>.log``; stopped together."""

    def __init__(self, root: Path):
        self.root, self.running = root, {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        self.running[name] = server(args, env, self.root / f"{name}.log")
        return self.running[name]

    def stop(self) -> None:
        for process in self.running.values():  # all at once, then wait for each
            process.popen.terminate()
        for process in reversed(self.running.values()):
            process.shutdown()


def embedded_env(home: HomeLayout, source: Path) -> dict[str, str]:
    """The embedded default: its own home, the same source, nothing of the production settings."""
    env = {key: value for key, value in os.environ.items() if not PRODUCTION_ONLY.match(key)}
    return {**env, HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home), SOURCE_ENV: str(source)}


def production_env(home: HomeLayout, dagster_db: str, mlflow_url: str, source: Path) -> dict[str, str]:
    """compose.yaml's environment of the Dagster services, made local."""
    env = compose_env("code", {
        "DAGSTER_HOME": str(home.dagster_home), **instance_env(dagster_db, home.dagster_home),
        HOME_ENV: str(home.root), "RECALL_PIPELINE_MLFLOW_URI": mlflow_url,
        "RECALL_PIPELINE_EXECUTOR": EXECUTOR,
        "RECALL_PIPELINE_CELERY_BROKER": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "RECALL_PIPELINE_CELERY_BACKEND": f"redis://127.0.0.1:6379/{REDIS_DB + 1}"})
    return {**env, SOURCE_ENV: str(source), "RECALL_PIPELINE_CELERY_QUEUE": QUEUE}


def local_workspace(root: Path, code_port: int) -> Path:
    """docker/workspace.yaml, pointed at the local code server."""
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=code_port)
    (root / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    return root / "workspace.yaml"


def launch(env: dict[str, str], workspace: Path, run_id: str) -> subprocess.Popen:
    """``dagster job launch``: the run is created and submitted to the instance's run coordinator."""
    return subprocess.Popen(
        [str(BIN / "dagster"), "job", "launch", "-w", str(workspace), "-l", LOCATION, "-j", "recall_job",
         "--config-json", json.dumps(RUN_CONFIG), "--run-id", run_id],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Layout:
    root = tmp_path_factory.mktemp("production-layout")
    source = synthetic.write_source(synthetic.generate(synthetic.spec_for(**SOURCE)), root / "source", "parquet")
    embedded, production = HomeLayout(root / "embedded").create(), HomeLayout(root / "production").create()
    production.mlflow_db.unlink()  # the tests' empty SQLite store (conftest): this home's is on PostgreSQL
    write_docker_instance(production.dagster_home)
    started, services = time.monotonic(), Services(root)
    with fresh_database("recall_dagster") as dagster_db, fresh_database("recall_mlflow") as mlflow_db:
        try:
            embedded_run = services.start("embedded", [sys.executable, "-c", EMBEDDED_RUN, json.dumps(RUN_CONFIG)],
                                          embedded_env(embedded, source))
            mlflow_port, code_port = free_port(), free_port()
            mlflow_url = f"http://127.0.0.1:{mlflow_port}"
            mlflow = services.start("mlflow", compose_command("mlflow"), compose_env("mlflow", {
                "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(mlflow_port), "MLFLOW_WORKERS": "1",
                "MLFLOW_BACKEND_STORE_URI": sqlalchemy_url(mlflow_db),
                "MLFLOW_ARTIFACTS_DESTINATION": str(production.mlflow_artifacts)}))
            env = production_env(production, dagster_db, mlflow_url, source)
            code = services.start("code", compose_command("code", h="127.0.0.1", p=str(code_port)), env)
            workspace = local_workspace(root, code_port)
            if EXECUTOR == "celery":
                services.start("worker", compose_command("worker", y=str(DOCKER / "celery.yaml"), q=QUEUE), env).wait_for(
                    r"\bready\.", timeout=180)
            code.wait_for(r"Started Dagster code", timeout=180)
            daemon = services.start("daemon", compose_command("daemon", w=str(workspace)), env)
            run_id = str(uuid.uuid4())
            launcher = launch(env, workspace, run_id)  # while the tracking server finishes starting
            wait_for_http(f"{mlflow_url}/health", mlflow, timeout=180)
            output, _ = launcher.communicate(timeout=300)
            assert launcher.returncode == 0, output[-4000:]
            submitted = time.monotonic()
            with pytest.MonkeyPatch.context() as patch:  # the instance file reads these
                for key, value in instance_env(dagster_db, production.dagster_home).items():
                    patch.setenv(key, value)
                with dg.DagsterInstance.from_config(str(production.dagster_home)) as instance:
                    run = wait_for_run(instance, run_id, daemon, started + RUN_TIMEOUT)
                    failures = failure_messages(instance, run_id)
            production_seconds = time.monotonic() - submitted
            assert run.status == dg.DagsterRunStatus.SUCCESS, (
                f"production run {run_id}: {run.status.value}\n" + "\n".join(failures)
                + f"\ncode server:\n{code.output()[-4000:]}\ndaemon:\n{daemon.output()[-3000:]}")
            embedded_run.wait(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - started)))
            assert embedded_run.popen.returncode == 0, embedded_run.output()[-4000:]
            seconds = {"production run (submitted to success)": production_seconds,
                       "both runs": time.monotonic() - started}
            print(", ".join(f"{name}: {value:.1f} s" for name, value in seconds.items()))
            worker = services.running.get("worker")
            yield Layout(dagster_db, mlflow_db, mlflow_url, run_id, production, embedded, daemon.output(),
                         worker.output() if worker else "", seconds)
        finally:
            services.stop()


def test_the_run_is_queued_then_launched_by_the_daemon(layout):
    # the run's life in the event log (stored under Dagster's older names: PIPELINE_*)
    events = [name for (name,) in query(
        layout.dagster_db, "select dagster_event_type from event_logs where run_id = %s "
                           "and dagster_event_type like 'PIPELINE_%%' order by id", (layout.run_id,))]
    assert events == ["PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS"]
    # queued by `dagster job launch`, launched by the daemon's queued run coordinator (with the
    # freshness sensor's first check run, when both wait at the same tick)
    assert re.search(r"QueuedRunCoordinatorDaemon .*Launched [12] runs", layout.daemon_log), layout.daemon_log[-3000:]
    tags = dict(query(layout.dagster_db, "select key, value from run_tags where run_id = %s", (layout.run_id,)))
    assert LAUNCHER_HOST_TAG in tags  # launched by docker/dagster.yaml's RecoveringRunLauncher
    heartbeats = {name for (name,) in query(layout.dagster_db, "select daemon_type from daemon_heartbeats")}
    assert {"QUEUED_RUN_COORDINATOR", "SCHEDULER", "SENSOR", "MONITORING"} <= heartbeats


def production_steps(layout: Layout) -> set[str]:
    """The steps that succeeded in the production run, read from its PostgreSQL event log."""
    return {step for (step,) in query(layout.dagster_db, "select distinct step_key from event_logs where run_id = %s "
                                                         "and dagster_event_type = 'STEP_SUCCESS'", (layout.run_id,))}


def embedded_steps(layout: Layout) -> set[str]:
    """The steps that succeeded in the embedded default's run (its SQLite storage)."""
    with dg.DagsterInstance.from_config(str(layout.embedded.dagster_home)) as instance:
        [run] = instance.get_runs()
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
        return {record.event_log_entry.step_key for record in records}


def celery_steps(layout: Layout) -> list[tuple[str, str, str]]:
    """(step key, the steps it names, the worker) of each event in which a Celery worker took a
    step of the production run ("Executing steps ... in celery worker", with the worker's name),
    read from its PostgreSQL event log in order."""
    rows = query(layout.dagster_db, "select step_key, event from event_logs where run_id = %s "
                                    "and dagster_event_type = 'ENGINE_EVENT' order by id", (layout.run_id,))
    taken = []
    for step_key, body in rows:
        metadata = dg.deserialize_value(body, dg.EventLogEntry).dagster_event.event_specific_data.metadata
        if "Celery worker" in metadata:
            taken.append((step_key, metadata["step_keys"].value, metadata["Celery worker"].value))
    return taken


@pytest.mark.skipif(EXECUTOR != "celery", reason=f"steps run by the {EXECUTOR} executor (EXECUTOR)")
def test_the_steps_ran_on_the_celery_worker(layout):
    """Every step of the run, and only those, was taken by the worker service's Celery worker,
    each once and alone."""
    taken = celery_steps(layout)
    steps = [step for step, _, _ in taken]
    assert len(steps) == len(set(steps))  # no step sent twice
    assert set(steps) == production_steps(layout) == embedded_steps(layout)
    assert all(named == step for step, named, _ in taken)  # one step per task
    [worker] = re.findall(r"(\S+@\S+) ready\.", layout.worker_log)  # the worker the test started
    assert {name for _, _, name in taken} == {worker}
    # and the worker's own log has one succeeded task per step of recall_job (the freshness
    # sensor's check runs, of the asset job, are tasks of the same worker too)
    succeeded = re.findall(r"Task execute_plan\[[-\w]+\] succeeded.*", layout.worker_log)
    assert len([task for task in succeeded if '"pipeline_name": "recall_job"' in task]) == len(steps)


def test_dagster_storage_is_on_postgresql(layout):
    assert {"runs", "run_tags", "event_logs", "instigators", "job_ticks", "concurrency_limits"} <= tables(
        layout.dagster_db)
    # every step of the embedded default's run succeeded here, as events in PostgreSQL
    steps = production_steps(layout)
    assert len(steps) >= 13 and steps == embedded_steps(layout)
    # schedule storage: the sensor the daemon ticks, and its ticks
    instigators = [body for (body,) in query(layout.dagster_db, "select instigator_body from instigators")]
    assert any('"feedback_inbox_sensor"' in body for body in instigators), instigators
    [(ticks,)] = query(layout.dagster_db, "select count(*) from job_ticks")
    assert ticks >= 1
    # the warehouse pool (docker/dagster.yaml's default limit, 1 slot) lives in the event log storage
    assert ("warehouse", 1) in query(layout.dagster_db, 'select concurrency_key, "limit" from concurrency_limits')
    # nothing fell back to the SQLite storage of a plain DAGSTER_HOME
    assert list(layout.production.dagster_home.rglob("*.db")) == []
    # the steps' stdout and stderr are in the shared compute log folder
    assert list((layout.production.dagster_home / "compute_logs" / layout.run_id).rglob("*.complete"))


def test_mlflow_registry_and_champion_are_on_postgresql(layout):
    assert {"registered_models", "model_versions", "registered_model_aliases", "runs"} <= tables(layout.mlflow_db)
    assert query(layout.mlflow_db, "select name, version from model_versions") == [(model_registry.MODEL_NAME, 1)]
    assert query(layout.mlflow_db, "select name, alias, version from registered_model_aliases") == [
        (model_registry.MODEL_NAME, model_registry.CHAMPION, 1)]
    assert not layout.production.mlflow_db.exists()  # no SQLite store beside it
    # the tracking server answers the name the other containers call it by (compose's allowed hosts)
    import requests

    search = f"{layout.mlflow_url}/api/2.0/mlflow/registered-models/search"
    assert requests.get(search, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200
    assert requests.get(search, headers={"Host": "elsewhere.example:5000"}, timeout=10).status_code == 403


def warehouse_rows(home: HomeLayout, sql: str) -> list[tuple]:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_results_equal_the_embedded_default(layout):
    lists = "select user_id, rank, item_id, route, model_version from recall.candidates order by user_id, rank"
    production, embedded = (warehouse_rows(home, lists) for home in (layout.production, layout.embedded))
    assert len({row[0] for row in production}) == SOURCE["users"] and len(production) >= SOURCE["users"] * 20
    assert production == embedded
    scores = "select score from recall.candidates order by user_id, rank"
    np.testing.assert_allclose(*(np.array(warehouse_rows(home, scores)) for home in (layout.production, layout.embedded)),
                               rtol=0, atol=1e-6)
    metrics = "select model, slice, metric, k, value from eval.metrics order by model, slice, metric, k"
    production, embedded = (warehouse_rows(home, metrics) for home in (layout.production, layout.embedded))
    assert len(production) > 50 and production == embedded
    vectors = "select embedding from features.item_embeddings order by item_id"
    np.testing.assert_allclose(*(np.array([row[0] for row in warehouse_rows(home, vectors)])
                                 for home in (layout.production, layout.embedded)), rtol=0, atol=1e-6)
    # the same decision in both registries: version 1, champion
    versions = "select version, promoted from models.versions"
    assert warehouse_rows(layout.production, versions) == warehouse_rows(layout.embedded, versions)
