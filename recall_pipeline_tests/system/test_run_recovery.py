"""The liveness rule on real processes, and the recovery on a real Dagster instance: which runs
are recovered, which are left alone, and which slots are freed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from recall_pipeline.runtime import processes, run_recovery
from recall_pipeline.runtime.processes import Liveness, ProcessIdentity
from recall_pipeline.settings import (
    DEFAULT_SLOT_WAIT_SECONDS, INSTANCE_YAML, OLD_INSTANCE_YAMLS, SLOT_WAIT_ENV, HomeLayout, slot_wait_seconds,
)


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def identity(process: subprocess.Popen, **changes) -> ProcessIdentity:
    fields = dict(host=processes.hostname(), pid=process.pid, start_ticks=processes.start_ticks(process.pid))
    return ProcessIdentity(**{**fields, **changes})


def test_a_live_process_is_alive_and_a_killed_one_dead():
    process = sleeper()
    recorded = identity(process)
    assert processes.judge(recorded).liveness is Liveness.ALIVE
    process.kill()
    time.sleep(0.2)  # killed, not yet reaped: a zombie is dead too
    assert processes.judge(recorded).liveness is Liveness.DEAD
    process.wait()
    verdict = processes.judge(recorded)
    assert verdict.liveness is Liveness.DEAD and verdict.reason == f"process {process.pid} is gone"


def test_a_reused_pid_is_not_the_run_s_process():
    process = sleeper()
    try:
        # the id is alive, but its start time is not the recorded one: another process
        assert processes.judge(identity(process, start_ticks=1)).liveness is Liveness.DEAD
        # seen running (an event) before this process started: another process
        assert processes.judge(identity(process, start_ticks=None, seen_running_at=time.time() - 3600)
                               ).liveness is Liveness.DEAD
        assert processes.judge(identity(process, start_ticks=None, seen_running_at=time.time())
                               ).liveness is Liveness.ALIVE
    finally:
        process.kill()
        process.wait()


def test_a_process_on_another_host_is_unknown():
    verdict = processes.judge(ProcessIdentity(host="elsewhere", pid=os.getpid()))
    assert verdict.liveness is Liveness.UNKNOWN and "'elsewhere'" in verdict.reason


@pytest.fixture
def instance():
    overrides = {"concurrency": {"pools": {"default_limit": 3}},
                 "run_launcher": {"module": "recall_pipeline.runtime.run_recovery", "class": "RecoveringRunLauncher"}}
    with dg.instance_for_test(overrides=overrides) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default("warehouse")
        yield instance


@dg.op
def noop():
    pass


@dg.job
def some_job():
    noop()


def run_holding_a_slot(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, tags: dict) -> dg.DagsterRun:
    run = instance.create_run_for_job(some_job, status=status, tags=tags)
    assert instance.event_log_storage.claim_concurrency_slot("warehouse", run.run_id, "noop").is_claimed
    return run


def owner(process: ProcessIdentity) -> dict[str, str]:
    return {run_recovery.OWNER_PID_TAG: str(process.pid), run_recovery.OWNER_HOST_TAG: process.host,
            run_recovery.OWNER_START_TAG: str(process.start_ticks)}


def test_recovery_marks_dead_runs_failed_and_frees_slots_leaving_the_others_alone(instance):
    gone = sleeper()
    dead_owner = identity(gone)
    gone.kill()
    gone.wait()
    started = dg.DagsterRunStatus.STARTED
    dead = run_holding_a_slot(instance, started, owner(dead_owner))
    elsewhere = run_holding_a_slot(instance, started, owner(ProcessIdentity("elsewhere", 4242, 1)))
    ended = run_holding_a_slot(instance, dg.DagsterRunStatus.SUCCESS, {})
    alive = instance.create_run_for_job(some_job, status=started, tags=run_recovery.owner_tags())
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(dead).status.value == "FAILED"
    assert launcher.check_run_worker_health(elsewhere).status.value == "RUNNING"  # unknown: left alone
    assert launcher.check_run_worker_health(alive).status.value == "RUNNING"

    lines = run_recovery.recover_dead_runs(instance, log=lambda line: None)

    assert sorted(lines) == sorted([
        f"recovered run {dead.run_id} (STARTED, recall-pipeline run, pid {gone.pid} on {dead_owner.host}: "
        f"process {gone.pid} is gone): marked FAILURE, freed slots: pool 'warehouse' (step noop)",
        f"left alone: run {elsewhere.run_id} (STARTED): its process runs on host 'elsewhere', "
        f"not on this one ({processes.hostname()!r})",
        f"freed slots of run {ended.run_id} (it ended SUCCESS but still held pool 'warehouse' (step noop))",
    ])
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(elsewhere.run_id).status == started
    assert instance.get_run_by_id(alive.run_id).status == started
    claimed = instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
    assert [slot.run_id for slot in claimed] == [elsewhere.run_id]
    # a second pass finds nothing more to do, and says the unknown run is still left alone
    left_alone = [line for line in lines if line.startswith("left alone")]
    assert run_recovery.recover_dead_runs(instance, log=lambda line: None) == left_alone


def test_existing_homes_get_the_new_instance_settings_unless_edited(tmp_path):
    old = HomeLayout(tmp_path / "old")
    old.dagster_home.mkdir(parents=True)
    (old.dagster_home / "dagster.yaml").write_text(OLD_INSTANCE_YAMLS[0])
    assert (old.create().dagster_home / "dagster.yaml").read_text() == INSTANCE_YAML
    edited = HomeLayout(tmp_path / "edited")
    edited.dagster_home.mkdir(parents=True)
    (edited.dagster_home / "dagster.yaml").write_text(OLD_INSTANCE_YAMLS[0] + "# mine\n")
    assert (edited.create().dagster_home / "dagster.yaml").read_text().endswith("# mine\n")
    assert "class: RecoveringRunLauncher" in INSTANCE_YAML and "run_monitoring:\n  enabled: true" in INSTANCE_YAML


def test_an_instance_file_of_the_previous_release_still_loads_its_launcher(tmp_path):
    """Homes written before the runtime package existed name ``recall_pipeline.run_recovery``:
    an untouched one is upgraded, an edited one keeps loading through the alias module."""
    [previous] = [text for text in OLD_INSTANCE_YAMLS if "module: recall_pipeline.run_recovery\n" in text]
    untouched = HomeLayout(tmp_path / "untouched")
    untouched.dagster_home.mkdir(parents=True)
    (untouched.dagster_home / "dagster.yaml").write_text(previous)
    assert (untouched.create().dagster_home / "dagster.yaml").read_text() == INSTANCE_YAML
    edited = HomeLayout(tmp_path / "edited")
    edited.dagster_home.mkdir(parents=True)
    (edited.dagster_home / "dagster.yaml").write_text(previous + "# mine\n")
    edited.create()
    with dg.DagsterInstance.from_config(str(edited.dagster_home)) as instance:
        assert type(instance.run_launcher) is run_recovery.RecoveringRunLauncher


def test_runs_launched_through_the_instance_queue_one_at_a_time(tmp_path):
    """A second run waits in Dagster's run queue (Queued, no process) while one is in progress,
    whoever launched it; homes of the previous release get the queue on their next start."""
    home = HomeLayout(tmp_path / "home").create()
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1  # what the daemon reads
    earlier = HomeLayout(tmp_path / "earlier")
    earlier.dagster_home.mkdir(parents=True)
    (earlier.dagster_home / "dagster.yaml").write_text(OLD_INSTANCE_YAMLS[-1])
    assert "max_concurrent_runs" not in OLD_INSTANCE_YAMLS[-1]
    assert (earlier.create().dagster_home / "dagster.yaml").read_text() == INSTANCE_YAML


def test_slot_wait_seconds_from_the_environment(monkeypatch):
    monkeypatch.delenv(SLOT_WAIT_ENV, raising=False)
    assert slot_wait_seconds() == DEFAULT_SLOT_WAIT_SECONDS
    monkeypatch.setenv(SLOT_WAIT_ENV, "2.5")
    assert slot_wait_seconds() == 2.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(SLOT_WAIT_ENV, bad)
        with pytest.raises(ValueError, match=SLOT_WAIT_ENV):
            slot_wait_seconds()
