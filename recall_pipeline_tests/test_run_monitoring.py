"""The daemon's run monitoring over the production instance (PostgreSQL storage, as in
docker/dagster.yaml) recovers a run whose process was killed with SIGKILL: it marks the run failed
and frees its slot, while a live run is left alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from recall_pipeline.settings import HOME_ENV, HomeLayout
from recall_pipeline_tests.subprocesses import ROOT, Process, slot_holder

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# Background processes of non-interactive shells ignore SIGINT, and dagster maps SIGTERM onto
# the SIGINT handler: restore SIGINT's default before exec, or the daemon cannot be stopped.
EXEC_WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                    "os.execvp(sys.argv[1], sys.argv[1:])")
POLL_SECONDS = 1  # the test's monitoring interval (docker/dagster.yaml: 30 s)


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not postgres_reachable(), reason=f"no PostgreSQL on {PG_HOST}:{PG_PORT}")


def admin(sql: str) -> None:
    import psycopg2

    con = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    con.autocommit = True
    try:
        con.cursor().execute(sql)
    finally:
        con.close()


@pytest.fixture
def postgres_home(tmp_path, monkeypatch):
    """A home whose Dagster instance is docker/dagster.yaml on a fresh database of its own."""
    database = f"recall_test_{uuid.uuid4().hex[:12]}"
    admin(f"create database {database}")
    home = HomeLayout(tmp_path / "home").create()
    instance_yaml = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    instance_yaml["storage"]["postgres"]["postgres_db"]["hostname"] = PG_HOST
    instance_yaml["run_monitoring"].update(poll_interval_seconds=POLL_SECONDS, free_slots_after_run_end_seconds=1)
    (home.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))
    env = {HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home), "DAGSTER_POSTGRES_USER": PG_USER,
           "DAGSTER_POSTGRES_PASSWORD": "unused-trust-auth", "DAGSTER_POSTGRES_DB": database}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield home, {**os.environ, **env}
    finally:
        admin(f"drop database if exists {database} with (force)")


def start_daemon(env: dict[str, str], log: Path) -> Process:
    daemon = str(Path(sys.executable).with_name("dagster-daemon"))
    return Process([sys.executable, "-c", EXEC_WITH_SIGINT, daemon, "run", "-w", "workspace.yaml"], env, log)


def stop(process: Process) -> None:
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
    try:  # anything it started (code servers) lives in its session
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
            assert f"process {victim.pid} is gone" in failure.message
            print(f"recovered {recovered_in:.1f} s after SIGKILL")
    finally:
        victim.stop()
        stop(daemon)
