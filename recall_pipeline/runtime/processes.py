"""Is the process that owns a run still alive? Local processes only, read from Linux ``/proc``.

A run whose process was killed (SIGKILL, the out-of-memory killer) stays ``STARTED`` in Dagster's
run storage and keeps its concurrency slots. To free them safely we must know that the process
is really gone, and a process id alone does not say that: ids are reused. So a process is named
by (host, pid, start time): the start time is ``/proc/<pid>/stat``'s field 22 (clock ticks since
boot), recorded when the run starts, or, when only the time at which the process was seen running
is known (Dagster's "Started process for run (pid: N)" event), a process with that id that started
later is somebody else. A process on another host, or where ``/proc`` cannot tell, is
``UNKNOWN``: callers leave such runs alone. No Dagster here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PROC = Path("/proc")
# /proc's boot time has a one-second resolution, and an event's timestamp is written just after
# the process started: a process that started this much later than it was seen is another one.
START_TOLERANCE_SECONDS = 2.0


class Liveness(Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    liveness: Liveness
    reason: str


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded for a run: where it ran, its id, and what tells a reused id apart."""

    host: str
    pid: int
    start_ticks: int | None = None       # /proc/<pid>/stat field 22 when the run started
    seen_running_at: float | None = None  # epoch seconds of an event the process wrote

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def hostname() -> str:
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on, or None when there is no such process.

    The command name (field 2) may hold spaces and parentheses: split after its last ``)``.
    """
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot; None when it does not exist."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def current_process() -> ProcessIdentity:
    """This process, as a run it executes records it."""
    return ProcessIdentity(host=hostname(), pid=os.getpid(), start_ticks=start_ticks(os.getpid()))


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def _started_at(ticks: int) -> float:
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def _exists(pid: int) -> bool | None:
    """Signal 0 asks the kernel without touching the process; None: it exists but is not ours."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


def judge(process: ProcessIdentity) -> Verdict:
    """ALIVE, DEAD or UNKNOWN, with the reason in words."""
    here = hostname()
    if process.host != here:
        return Verdict(Liveness.UNKNOWN, f"its process runs on host {process.host!r}, not on this one ({here!r})")
    if not PROC.is_dir():
        return Verdict(Liveness.UNKNOWN, "this system has no /proc to check processes in")
    exists = _exists(process.pid)
    if exists is False:
        return Verdict(Liveness.DEAD, f"process {process.pid} is gone")
    fields = _stat_fields(process.pid)
    if fields is None:
        if exists is None:
            return Verdict(Liveness.UNKNOWN, f"process {process.pid} exists but /proc does not show it")
        return Verdict(Liveness.DEAD, f"process {process.pid} is gone")
    if fields[0] in ("Z", "X"):
        return Verdict(Liveness.DEAD, f"process {process.pid} has exited (not yet reaped by its parent)")
    ticks = int(fields[19])
    if process.start_ticks is not None and ticks != process.start_ticks:
        return Verdict(Liveness.DEAD, f"process {process.pid} is gone (the id now belongs to a newer process)")
    if process.seen_running_at is not None and _started_at(ticks) > process.seen_running_at + START_TOLERANCE_SECONDS:
        return Verdict(Liveness.DEAD, f"process {process.pid} is gone (the id now belongs to a process "
                                      "started after the run's)")
    return Verdict(Liveness.ALIVE, f"process {process.pid} is running")
