"""The daemon's run monitoring over the production instance (PostgreSQL storage, as in
docker/dagster.yaml) recovers a run whose process was killed with SIGKILL: it marks the run failed
and frees its slot, while a live run is left alone."""

from __future__ import annotations

import os
import re
import signal
import time

import dagster as dg
import pytest

from recall_pipeline.settings import HOME_ENV, HomeLayout
from recall_pipeline_tests.postgres import fresh_database, instance_env, requires_postgres, write_docker_instance
from recall_pipeline_tests.subprocesses import Process, server, slot_holder

POLL_SECONDS = 1  # the test's monitoring interval (docker/dagster.yaml: 30 s)

pytestmark = requires_postgres


@pytest.fixture
def postgres_home(tmp_path, monkeypatch):
    """A home whose Dagster instance is docker/dagster.yaml on a fresh database of its own."""
    with fresh_database() as database:
        home = HomeLayout(tmp_path / "home").create()
        write_docker_instance(home.dagster_home, run_monitoring={
            "poll_interval_seconds": POLL_SECONDS, "free_slots_after_run_end_seconds": 1})
        env = {HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home), **instance_env(database, home.dagster_home)}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield home, {**os.environ, **env}


def start_daemon(env: dict[str, str], log) -> Process:
    return server(["dagster-daemon", "run", "-w", "workspace.yaml"], env, log)


def test_daemon_recovers_a_run_killed_with_sigkill(postgres_home, tmp_path):
    home, env = postgres_home
    daemon = start_daemon(env, tmp_path / "daemon.log")
    victim = slot_holder(env, tmp_path / "victim.log")
    try:
        with dg.DagsterInstance.get() as instance:
            assert instance.run_launcher.__class__.__name__ == "RecoveringRunLauncher"
            run = instance.get_runs(filters=dg.RunsFilter(job_name="slot_holder"), limit=1)[0]
            # the daemon checks the live run and leaves it alone
            daemon.wait_for(f"Checking run {run.run_id}", timeout=180)
            time.sleep(2 * POLL_SECONDS)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            info = instance.event_log_storage.get_concurrency_info("warehouse")
            assert [slot.run_id for slot in info.claimed_slots] == [run.run_id]

            victim.popen.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            killed_at = time.monotonic()
            deadline, status, claimed = killed_at + 60, None, None
            while time.monotonic() < deadline:
                status = instance.get_run_by_id(run.run_id).status
                claimed = instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
                if status == dg.DagsterRunStatus.FAILURE and not claimed:
                    break
                time.sleep(0.5)
            recovered_in = time.monotonic() - killed_at
            assert (status, claimed) == (dg.DagsterRunStatus.FAILURE, []), daemon.output()[-4000:]
            assert recovered_in < 30
            failure = instance.event_log_storage.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0].event_log_entry
            # the daemon may look between the kill and this test reaping the process: a zombie
            assert re.search(rf"process {victim.pid} (is gone|has exited \(not yet reaped)", failure.message), failure.message
            print(f"recovered {recovered_in:.1f} s after SIGKILL")
    finally:
        victim.stop()
        daemon.shutdown()
