"""The real Dagster UI: start `dagster dev`, read the asset graph over GraphQL, launch a
materialization through it, wait for success, and stop the server by its process id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recall_pipeline.settings import HOME_ENV, HomeLayout
from recall_pipeline_tests.subprocesses import EXEC_WITH_SIGINT, ROOT, free_port, home_env, slot_holder
from recall_pipeline_tests.ui import graphql

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""


@pytest.fixture
def dagster_dev(tmp_path):
    home = HomeLayout(tmp_path / "home").create()
    port = free_port()
    env = {**os.environ, HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", EXEC_WITH_SIGINT, dagster, "dev", "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
                time.sleep(0.5)
        else:
            pytest.fail("dagster dev did not answer within 120 s")
        yield port, home, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # code servers that dagster dev started live in the same session: end any still alive
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        log.close()


def test_ui_shows_the_graph_and_runs_a_materialization(dagster_dev):
    port, home, process = dagster_dev
    nodes = graphql(port, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    assert {n["assetKey"]["path"][0] for n in nodes} >= {"raw_interactions", "item_embeddings", "faiss_index",
                                                          "recall_candidates", "evaluation_report"}
    repo = graphql(port, """{ repositoriesOrError { ... on RepositoryConnection { nodes {
        name location { name } schedules { name } sensors { name } } } } }""")["repositoriesOrError"]["nodes"][0]
    assert [s["name"] for s in repo["schedules"]] == ["nightly_refresh"]
    assert sorted(s["name"] for s in repo["sensors"]) == ["feedback_inbox_sensor", "published_freshness_sensor",
                                                         "run_failure_recorder"]

    # a run killed with SIGKILL still holds the warehouse slot: recovery frees it
    dead = slot_holder(home_env(home), home.root / "dead.log")
    dead.popen.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    # another run is in progress (the CLI's, holding no slot): a run launched from the UI waits
    # in the run queue, with no process of its own, instead of starting beside it and spinning
    # on the warehouse slot once they meet
    holder = slot_holder(home_env(home), home.root / "busy.log", pool=None)
    try:
        run_id = launch_beside(port, repo, holder)
    finally:
        if holder.popen.poll() is None:  # a failed assertion must not leave the run behind
            holder.popen.kill()
            holder.wait(timeout=30)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        killed = instance.get_runs(filters=dg.RunsFilter(job_name="slot_holder"))
        assert [run.status for run in killed] == [dg.DagsterRunStatus.FAILURE] * 2  # by the launcher or run monitoring
        started = instance.get_run_record_by_id(run_id).start_time
        assert started >= max(instance.get_run_record_by_id(run.run_id).end_time for run in killed)
        assert instance.get_run_by_id(run_id).tags["recall_pipeline/launcher_host"]

    import duckdb

    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        assert con.execute("select count(*), min(batch_id) from raw.interactions").fetchall() == [(100_004, run_id)]

    process.send_signal(signal.SIGTERM)  # stopped by its process id, as a script would
    assert process.wait(timeout=60) == 0  # a clean shutdown, not a kill
    with pytest.raises(OSError):  # nothing answers on its port any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
    assert session_ends(process.pid, timeout=30), "processes of dagster dev's session outlived it"



def launch_beside(port: int, repo: dict, holder) -> str:
    """Launch the raw assets from the UI while ``holder``'s run is in progress: the launch waits
    in the queue; once the holder is killed, it runs and succeeds. Returns its run id."""
    params = {"selector": {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                           "jobName": "__ASSET_JOB",
                           "assetSelection": [{"path": ["raw_interactions"]}, {"path": ["raw_items"]}]},
              "runConfigData": {}}
    launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def status() -> str:
        return graphql(port, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                       {"id": run_id})["runOrError"]["status"]

    waited = time.time() + 8
    while time.time() < waited:  # two dequeue ticks at least
        assert status() == "QUEUED"
        time.sleep(1)
    # the run in progress dies with SIGKILL: recovery ends it, and the queue moves on
    holder.popen.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    deadline, ended = time.time() + 180, None
    while time.time() < deadline:
        ended = status()
        if ended in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert ended == "SUCCESS"
    return run_id


def session_ends(session: int, timeout: float) -> bool:
    """Whether every process of the session (``dagster dev`` and the code servers it started)
    has exited within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False
