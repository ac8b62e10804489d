"""Execute a job in this process so that it can always be stopped, and say why it stopped.

``recall-pipeline run`` executes ``recall_job`` in its own process (``execute_in_process``).
Three things go wrong there with Dagster 1.13.27 alone, and this module handles each:

- A step that waits for a slot of a concurrency pool waits forever, silently. A watchdog thread
  reads the pool's claims: it says which run holds the slot (run id, its process), recovers the
  holder if its process is gone (:mod:`recall_pipeline.runtime.run_recovery`), repeats the line every
  :data:`WAIT_LOG_SECONDS`, and gives up after ``RECALL_PIPELINE_SLOT_WAIT_SECONDS``.
- While a step waits for a slot, SIGTERM and Ctrl-C do nothing: Dagster turns them into a flag
  that it reads only when the next step starts. The watchdog sees the signal (``set_wakeup_fd``),
  marks the run canceling, and, if the run is still waiting after a grace period, interrupts it.
- The executor busy-waits for the slot at 100 % of a core (see :func:`sleep_between_slot_checks`).

Stopping uses Dagster's own path for interrupts: the main thread receives a
``DagsterExecutionInterruptedError`` (delivered by a SIGUSR1 handler, so a sleeping thread wakes
up), the run ends ``CANCELED`` (signals) or ``FAILURE`` (slot timeout), and pending claims are
released; :func:`finish` then frees any slot the run still holds and ends it if Dagster could not.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEventType

from recall_pipeline.runtime import run_recovery
from recall_pipeline.runtime.processes import Liveness

WAIT_LOG_SECONDS = 30.0   # how often a waiting run repeats what it waits for
POLL_SECONDS = 1.0        # how often the watchdog reads the pools and signals
HOLDER_CHECK_SECONDS = 5.0  # how often it judges the process of the run that holds the slot
GRACE_SECONDS = 2.0       # after a signal, Dagster's own interrupt gets this long to end the run
FORCE_AFTER_SECONDS = 30.0  # ... and after this long the run is interrupted wherever it is
DELIVERY_SIGNAL = signal.SIGUSR1
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class RunInterrupted(DagsterExecutionInterruptedError):
    """Raised in the main thread to stop the run; Dagster treats it like a termination."""


def _say(line: str) -> None:
    print(f"recall-pipeline: {line}", file=sys.stderr, flush=True)


def sleep_between_slot_checks() -> None:
    """Make the in-process executor sleep while a step waits for a pool slot.

    In Dagster 1.13.27 ``InstanceConcurrencyContext.interval_to_next_pending_claim_check``
    returns ``min([0, ...])``, never above 0, so ``sleep_til_ready`` never sleeps and the waiting
    run holds one core at ~100 % (seen on a run waiting for the warehouse slot). This returns the time until the next
    claim check instead (at most 15 s by Dagster's own back-off). Applied only in the CLI's
    process and only to that release.
    """
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    if dg.__version__ != "1.13.27" or getattr(InstanceConcurrencyContext, "_recall_pipeline_sleeps", False):
        return

    def interval_to_next_pending_claim_check(self) -> float:
        if not self._pending_claims or not self._pending_timeouts:
            return 0.0
        return max(0.0, min(self._pending_timeouts.values()) - time.time())

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check
    InstanceConcurrencyContext._recall_pipeline_sleeps = True


@dataclass
class Stop:
    """Why the run was stopped from outside: a signal, or a slot wait that timed out."""

    reason: str
    by_signal: bool
    signum: int | None = None
    at: float = field(default_factory=time.monotonic)
    announced: bool = False


@dataclass
class Waiting:
    since: float
    logged_at: float
    holders: str = ""       # who holds the slot, in words, as last judged
    judged_at: float = 0.0


class RunGuard:
    """The watchdog thread and the signal plumbing around one ``execute_in_process`` call."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, slot_wait_seconds: float,
                 say: Callable[[str], None] = _say):
        self.instance, self.run_id, self.limit, self.say = instance, run_id, slot_wait_seconds, say
        self.stop: Stop | None = None
        self._waiting: Waiting | None = None
        self._delivered = False
        self._armed = False
        self._lock = threading.RLock()  # signal handlers take it too
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="recall-run-guard", daemon=True)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._saved: dict[int, object] = {}
        self._saved_wakeup = -1

    # --- main thread -------------------------------------------------------------------------
    def __enter__(self) -> "RunGuard":
        """Install the handlers (the main thread only may) and start watching."""
        for signum in (*STOP_SIGNALS, DELIVERY_SIGNAL):
            self._saved[signum] = signal.getsignal(signum)
        # outside Dagster's execution (run creation, shutdown) these stop the run directly;
        # inside it, Dagster installs its own handlers and restores these afterwards
        signal.signal(signal.SIGINT, self._stop_now)
        signal.signal(signal.SIGTERM, self._stop_now)
        signal.signal(DELIVERY_SIGNAL, self._deliver)
        self._saved_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._armed = True
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._armed = False
        self._done.set()
        self._thread.join(timeout=10)
        signal.set_wakeup_fd(self._saved_wakeup)
        for signum, handler in self._saved.items():
            if signum != DELIVERY_SIGNAL:  # a late delivery must find a handler, never the default
                signal.signal(signum, handler)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _stop_now(self, signum: int, _frame) -> None:
        """Outside Dagster's execution: stop at once. No I/O in a handler; the watchdog says it."""
        with self._lock:
            if self.stop is None:
                self.stop = Stop(f"received {STOP_SIGNALS[signum]}", by_signal=True, signum=signum)
            reason = self.stop.reason
        raise RunInterrupted(reason)

    def _deliver(self, _signum: int, _frame) -> None:
        with self._lock:
            if not self._armed or self._delivered or self.stop is None:
                return
            self._delivered = True
        raise RunInterrupted(self.stop.reason)

    # --- watchdog thread ---------------------------------------------------------------------
    def _watch(self) -> None:
        instance = dg.DagsterInstance.from_ref(self.instance.get_ref())
        try:
            while not self._done.is_set():
                for signum in self._signals_received():
                    self._note_signal(signum, instance)
                try:
                    self._check_slots(instance)
                except Exception as exc:  # a storage hiccup must not end the watch
                    self.say(f"could not read the concurrency pools ({exc}); still watching")
                self._interrupt_if_due(instance)
        finally:
            instance.dispose()

    def _signals_received(self) -> list[int]:
        ready, _, _ = select.select([self._read_fd], [], [], POLL_SECONDS)
        if not ready:
            return []
        try:
            data = os.read(self._read_fd, 64)
        except BlockingIOError:
            return []
        return [signum for signum in data if signum in STOP_SIGNALS]

    def _note_signal(self, signum: int, instance: dg.DagsterInstance) -> None:
        """The first SIGTERM/Ctrl-C: mark the run canceling (so that it ends CANCELED) and say so."""
        with self._lock:
            if self.stop is None:
                self.stop = Stop(f"received {STOP_SIGNALS[signum]}", by_signal=True, signum=signum)
            elif self.stop.announced:
                if self.stop.by_signal and not self._delivered:
                    self.stop.at -= FORCE_AFTER_SECONDS  # a second signal: interrupt at once
                return
            self.stop.announced = True
        self.say(f"received {STOP_SIGNALS[signum]}: stopping run {self.run_id}; it will be marked "
                 "canceled and its slots freed; the published copy is not touched")
        run = instance.get_run_by_id(self.run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceling(run, f"recall-pipeline: {self.stop.reason}")

    def _interrupt_if_due(self, instance: dg.DagsterInstance) -> None:
        stop = self.stop
        if stop is None or self._delivered:
            return
        run = instance.get_run_by_id(self.run_id)
        if run is not None and run.is_finished:
            return
        elapsed = time.monotonic() - stop.at
        if not stop.by_signal or (elapsed > GRACE_SECONDS and self._waiting) or elapsed > FORCE_AFTER_SECONDS:
            with self._lock:
                if self._armed and not self._delivered:
                    signal.pthread_kill(threading.main_thread().ident, DELIVERY_SIGNAL)

    def _check_slots(self, instance: dg.DagsterInstance) -> None:
        """Find this run's steps waiting for a slot, say who holds it, give up past the limit."""
        storage = instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            return
        infos = storage.get_concurrency_infos(list(storage.get_concurrency_keys()))
        waiting = [(pool, step.step_key) for pool, info in infos.items() for step in info.pending_steps
                   if step.run_id == self.run_id and step.assigned_timestamp is None]
        now = time.monotonic()
        if not waiting:
            self._waiting = None
            return
        pool, step = waiting[0]
        first = self._waiting is None
        if first:
            self._waiting = Waiting(since=now, logged_at=now)
        if now - self._waiting.judged_at >= HOLDER_CHECK_SECONDS:
            holders = [slot for slot in infos[pool].claimed_slots if slot.run_id != self.run_id]
            self._waiting.holders, self._waiting.judged_at = self._describe_holders(instance, pool, holders), now
        described, waited = self._waiting.holders, now - self._waiting.since
        if first:
            self.say(f"step {step} waits for a slot of pool {pool!r}, held by {described}; "
                     f"giving up after {self.limit:.0f} s (RECALL_PIPELINE_SLOT_WAIT_SECONDS)")
        elif waited > self.limit and self.stop is None:
            reason = (f"gave up after waiting {waited:.0f} s for a slot of pool {pool!r} (step {step}), "
                      f"held by {described}")
            with self._lock:
                self.stop = Stop(reason, by_signal=False)
            self.say(reason)
            run = instance.get_run_by_id(self.run_id)
            if run is not None:
                instance.report_engine_event(f"recall-pipeline: {reason}", run)
        elif now - self._waiting.logged_at >= WAIT_LOG_SECONDS:
            self._waiting.logged_at = now
            self.say(f"still waiting ({waited:.0f} s) for a slot of pool {pool!r} (step {step}), held by {described}")

    def _describe_holders(self, instance: dg.DagsterInstance, pool: str, holders: list) -> str:
        """Each holding run with its process; a holder whose process is gone is recovered now."""
        if not holders:
            return "no run (the slot is being handed over)"
        parts = []
        for slot in holders:
            run = instance.get_run_by_id(slot.run_id)
            if run is None or run.is_finished:
                instance.event_log_storage.free_concurrency_slots_for_run(slot.run_id)
                self.say(f"freed the slot of run {slot.run_id} (step {slot.step_key}): the run has ended")
                parts.append(f"run {slot.run_id} (ended; its slot was freed)")
                continue
            verdict, owner = run_recovery.judge_run(instance, run)
            if verdict.liveness is Liveness.DEAD:
                self.say(run_recovery.recover_run(instance, run, f"{owner.description}: {verdict.reason}",
                                                  [(pool, slot.step_key)]))
                parts.append(f"run {slot.run_id} (its process was gone: recovered)")
                continue
            parts.append(f"run {slot.run_id} (step {slot.step_key}, {run.status.value}, {owner.description}, "
                         f"{verdict.liveness.value})")
        return "; ".join(parts)


@dataclass
class GuardedRun:
    run_id: str
    result: dg.ExecuteInProcessResult | None
    stop: Stop | None

    @property
    def success(self) -> bool:
        """The run succeeded (a stop that came after the last step does not undo that)."""
        return self.result is not None and self.result.success


def execute(job: dg.JobDefinition, instance: dg.DagsterInstance, run_config: dict,
            slot_wait_seconds: float, say: Callable[[str], None] = _say) -> GuardedRun:
    """Recover dead runs, then execute the job in this process under a :class:`RunGuard`."""
    run_recovery.recover_dead_runs(instance, say)
    sleep_between_slot_checks()
    from dagster._core.utils import make_new_run_id

    run_id = make_new_run_id()
    result = None
    guard = RunGuard(instance, run_id, slot_wait_seconds, say)
    try:
        with guard:
            result = job.execute_in_process(instance=instance, run_id=run_id, raise_on_error=False,
                                            run_config=run_config, tags=run_recovery.owner_tags())
    except (RunInterrupted, KeyboardInterrupt):
        pass  # stopped outside Dagster's own handling: finish() ends the run
    finally:
        finish(instance, run_id, guard.stop)
    return GuardedRun(run_id, result, guard.stop)


def finish(instance: dg.DagsterInstance, run_id: str, stop: Stop | None) -> None:
    """End the run if Dagster could not (canceled for a signal, failed otherwise); free its slots."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        message = f"recall-pipeline: {stop.reason if stop else 'the run ended without a final status'}"
        if stop is not None and stop.by_signal:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


# --- what to tell the user when the run failed -------------------------------------------------
NEXT_STEPS = {
    "SourceError": "fix the file or its mapping in the source YAML (docs/your-own-data.md), then run again",
    "IndexMismatchError": "re-materialize the asset the message names (or run `recall-pipeline run` again)",
    "EncoderMismatchError": "run `recall-pipeline run` again so that the model and the embeddings match",
    "MlflowException": "check the MLflow store (RECALL_PIPELINE_MLFLOW_URI or <home>/mlflow), then run again",
    "IOException": "another process may hold the DuckDB file: close it (a DuckDB client, a notebook), then run again",
}


def own_error(error) -> tuple[str, str]:
    """(class name, message) of the error the step itself raised, not Dagster's wrapper."""
    if error.cls_name in ("DagsterExecutionStepExecutionError", "DagsterUserCodeProcessError") and error.cause:
        error = error.cause
    name = error.cls_name or "Error"
    text = error.message.strip()
    head, sep, rest = text.partition(": ")
    if sep and head.split(".")[-1] == name:  # "package.module.SourceError: the text"
        text = rest
    return name, text


def failure_lines(instance: dg.DagsterInstance, guarded: GuardedRun) -> list[str]:
    """The last lines of a failed run: the failing step, the error's own message, what to do next."""
    records = instance.event_log_storage.get_records_for_run(
        guarded.run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE,
                                 DagsterEventType.RUN_CANCELED}).records
    entries = [record.event_log_entry for record in records]
    step_failures = [e for e in entries if e.dagster_event_type == DagsterEventType.STEP_FAILURE]
    if guarded.stop is not None:
        lines = [f"the run was stopped: {guarded.stop.reason}"]
        advice = ("run `recall-pipeline run` again when you are ready" if guarded.stop.by_signal else
                  "wait for the run that holds the slot, or stop it (UI: Runs -> Terminate), or raise "
                  "RECALL_PIPELINE_SLOT_WAIT_SECONDS to wait longer; then run again")
    elif step_failures:
        name, text = own_error(step_failures[0].dagster_event.step_failure_data.error)
        lines = [f"failed step: {step_failures[0].step_key}", f"error: {name}: {text}"]
        advice = NEXT_STEPS.get(name, "fix the cause above, then run `recall-pipeline run` again")
    else:
        ends = [e for e in entries if e.dagster_event_type != DagsterEventType.STEP_FAILURE]
        lines = [f"the run failed: {ends[-1].message if ends else 'no step failed; see the log above'}"]
        advice = "fix the cause above, then run `recall-pipeline run` again"
    lines.append(f"next: {advice}")
    unchanged = "" if _published(instance, guarded.run_id) else "the published copy (published.duckdb) was not changed; "
    lines.append(f"{unchanged}the whole log: `make dev`, then Runs -> {guarded.run_id}")
    return lines


def _published(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether this run materialized the published copy (then the read copy did change)."""
    records = instance.event_log_storage.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    return any(r.event_log_entry.dagster_event.asset_key == dg.AssetKey("published_warehouse") for r in records)
