"""Runs whose process is gone: mark them failed and free their concurrency slots.

A run killed with SIGKILL (or by the out-of-memory killer) never writes its end: Dagster keeps it
``STARTED`` and keeps the slot its step claimed in the ``warehouse`` pool, so every later run's
warehouse steps wait for it forever. Before a run starts (``recall-pipeline run``, and every
launch through :class:`RecoveringRunLauncher`: the UI, schedules, sensors) :func:`recover_dead_runs`
finds the in-progress runs whose process is gone, marks them failed, frees their slots, frees the
slots still held by runs that already ended, and says so, one line per run. The daemon's run
monitoring asks :meth:`RecoveringRunLauncher.check_run_worker_health` the same question, so that a
killed run is recovered even when no new run starts.

Which process owns a run: ``recall-pipeline run`` tags its runs with its host, pid and process
start time (:func:`owner_tags`); a run that Dagster's run launcher started records its run worker
in the engine event "Started process for run (pid: N)", and the launcher below tags the host it
launched from. A run on another host, or one whose process cannot be judged, is left alone,
with a line that says so. Imports Dagster only (the webserver and daemon import this module).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from recall_pipeline.runtime import processes
from recall_pipeline.runtime.processes import Liveness, ProcessIdentity, Verdict

OWNER_PID_TAG = "recall_pipeline/pid"
OWNER_HOST_TAG = "recall_pipeline/host"
OWNER_START_TAG = "recall_pipeline/pid_start_ticks"
LAUNCHER_HOST_TAG = "recall_pipeline/launcher_host"
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# a run worker started by a code server that the launcher reached on its own host
LOCAL_GRPC_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
GRPC_TIMEOUT_SECONDS = 5

logger = logging.getLogger("recall_pipeline.runtime.run_recovery")


@dataclass(frozen=True)
class RunOwner:
    """Who runs a run: the process (None when unknown) and, in words, what it is."""

    process: ProcessIdentity | None
    description: str


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of the run it is about to execute."""
    me = processes.current_process()
    tags = {OWNER_PID_TAG: str(me.pid), OWNER_HOST_TAG: me.host}
    if me.start_ticks is not None:
        tags[OWNER_START_TAG] = str(me.start_ticks)
    return tags


def recorded_worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, time) of the first engine event of the run that names its process, if any.

    "Started process for run (pid: N)" (a launched run's worker), "Executing steps in process
    (pid: N)" or the multiprocess executor's parent process: all carry a ``pid`` metadata entry.
    """
    records = instance.event_log_storage.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=20).records
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "pid" in metadata:
            return int(metadata["pid"].value), record.event_log_entry.timestamp
    return None


def _worker_host(run: dg.DagsterRun) -> str | None:
    """The host of a launched run's worker: the launcher's, when its code server was local."""
    launcher_host = run.tags.get(LAUNCHER_HOST_TAG)
    grpc_info = json.loads(run.tags[GRPC_INFO_TAG]) if GRPC_INFO_TAG in run.tags else None
    if launcher_host is None or grpc_info is None:
        return None
    local = "socket" in grpc_info or grpc_info.get("host") in LOCAL_GRPC_HOSTS | {launcher_host}
    return launcher_host if local else None


def run_owner(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunOwner:
    tags = run.tags
    if OWNER_PID_TAG in tags:
        start = tags.get(OWNER_START_TAG)
        process = ProcessIdentity(host=tags.get(OWNER_HOST_TAG, "?"), pid=int(tags[OWNER_PID_TAG]),
                                  start_ticks=int(start) if start else None)
        return RunOwner(process, f"recall-pipeline run, {process.describe()}")
    worker = recorded_worker(instance, run.run_id)
    if worker is None:
        return RunOwner(None, "Dagster recorded no process id for it")
    pid, seen_at = worker
    host = _worker_host(run)
    if host is None:
        return RunOwner(None, f"run worker pid {pid}, started by a code server on another host")
    process = ProcessIdentity(host=host, pid=pid, seen_running_at=seen_at)
    return RunOwner(process, f"run worker, {process.describe()}")


def _code_server_runs(run: dg.DagsterRun) -> bool | None:
    """Ask the code server that started the run whether it still executes it (None: no answer).

    The only way to judge a run worker in another container (docker/compose.yaml): its process is
    not visible here, but the code server keeps a handle on every run worker it started.
    """
    if GRPC_INFO_TAG not in run.tags:
        return None
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
    from dagster._serdes import deserialize_value

    info = json.loads(run.tags[GRPC_INFO_TAG])
    client = DagsterGrpcClient(port=info.get("port"), socket=info.get("socket"), host=info.get("host"),
                               use_ssl=bool(info.get("use_ssl", False)))
    try:
        answer = client.can_cancel_execution(CanCancelExecutionRequest(run_id=run.run_id),
                                             timeout=GRPC_TIMEOUT_SECONDS)
        return deserialize_value(answer, CanCancelExecutionResult).can_cancel
    except Exception:  # unreachable, restarting, another version: no answer is not "dead"
        return None


def judge_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[Verdict, RunOwner]:
    """Is the run's process alive, dead, or unknown, and who is it."""
    owner = run_owner(instance, run)
    if owner.process is not None:
        return processes.judge(owner.process), owner
    if run.status == dg.DagsterRunStatus.STARTED and _code_server_runs(run) is False:
        return Verdict(Liveness.DEAD, "the code server that started it no longer runs it"), owner
    return Verdict(Liveness.UNKNOWN, f"cannot tell whether its process is alive ({owner.description})"), owner


def held_slots(instance: dg.DagsterInstance) -> dict[str, list[tuple[str, str]]]:
    """run id -> [(pool, step)] of every claimed slot and every queued step, across all pools."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    held: dict[str, list[tuple[str, str]]] = {}
    for pool, info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).items():
        for slot in info.claimed_slots:
            held.setdefault(slot.run_id, []).append((pool, slot.step_key))
        for step in info.pending_steps:
            held.setdefault(step.run_id, [])
    return held


def _slots_text(slots: list[tuple[str, str]]) -> str:
    return ", ".join(f"pool {pool!r} (step {step})" for pool, step in slots) or "none claimed"


def recover_run(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str,
                slots: list[tuple[str, str]]) -> str:
    """Mark a run whose process is gone as failed (canceled if it was canceling), free its slots."""
    message = f"recall_pipeline: the run's process is gone ({why}); marked ended and its concurrency slots freed"
    current = instance.get_run_by_id(run.run_id)
    ended = "already ended"
    if current is not None and not current.is_finished:
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
            ended = "marked CANCELED"
        else:
            instance.report_run_failed(current, message, JobFailureData(
                error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
            ended = "marked FAILURE"
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return (f"recovered run {run.run_id} ({run.status.value}, {why}): {ended}, "
            f"freed slots: {_slots_text(slots)}")


def recover_dead_runs(instance: dg.DagsterInstance,
                      log: Callable[[str], None] = logger.warning) -> list[str]:
    """Recover every in-progress run whose process is gone; free slots of ended runs. One line each."""
    lines, judged = [], set()
    held = held_slots(instance)
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        judged.add(run.run_id)
        verdict, owner = judge_run(instance, run)
        if verdict.liveness is Liveness.DEAD:
            lines.append(recover_run(instance, run, f"{owner.description}: {verdict.reason}",
                                     held.get(run.run_id, [])))
        elif verdict.liveness is Liveness.UNKNOWN:
            lines.append(f"left alone: run {run.run_id} ({run.status.value}): {verdict.reason}")
    for run_id, slots in held.items():
        if run_id in judged:
            continue
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            state = "no longer exists" if run is None else f"ended {run.status.value}"
            lines.append(f"freed slots of run {run_id} (it {state} but still held {_slots_text(slots)})")
    for line in lines:
        log(line)
    return lines


class RecoveringRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default run launcher, plus: recover dead runs before each launch, tag the
    launching host, and answer run monitoring's health check with the same liveness rule.

    Configured in the instance's dagster.yaml (``run_launcher: module: recall_pipeline.runtime.run_recovery,
    class: RecoveringRunLauncher``); with ``run_monitoring: enabled: true`` the daemon asks
    :meth:`check_run_worker_health` about every ``STARTED`` run and marks the dead ones failed.
    """

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        for line in recover_dead_runs(self._instance):
            self._instance.report_engine_event(f"before launch: {line}", run)
        self._instance.add_run_tags(run.run_id, {LAUNCHER_HOST_TAG: processes.hostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """FAILED only when the process is known to be gone; UNKNOWN reads as RUNNING, because
        run monitoring marks every status other than RUNNING and SUCCESS as failed."""
        verdict, owner = judge_run(self._instance, run)
        if verdict.liveness is Liveness.DEAD:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"{owner.description}: {verdict.reason}")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"{owner.description}: {verdict.reason}")
