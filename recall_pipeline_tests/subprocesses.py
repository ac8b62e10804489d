"""Real processes for the crash tests: the `recall-pipeline` CLI, and a run that holds a slot."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from recall_pipeline.settings import HOME_ENV, HomeLayout

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Background processes of non-interactive shells ignore SIGINT, and dagster maps SIGTERM to the
# SIGINT handler: a server started through this restores SIGINT's default first, so that SIGTERM
# stops it.
EXEC_WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                    "os.execvp(sys.argv[1], sys.argv[1:])")
# A run of a one-step job whose step sits in the "warehouse" pool: it holds the pool's only slot
# until it is killed, and its process is tagged as the run's owner, as `recall-pipeline run` does.
HOLDER = """
import time
import dagster as dg
from recall_pipeline.runtime.run_recovery import owner_tags

@dg.op(pool={pool})
def hold_warehouse_slot():
    print({message!r}, flush=True)
    time.sleep(600)

@dg.job
def slot_holder():
    hold_warehouse_slot()

with dg.DagsterInstance.get() as instance:
    slot_holder.execute_in_process(instance=instance, tags=owner_tags())
"""


def home_env(home: HomeLayout, **extra: str) -> dict[str, str]:
    return {**os.environ, HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home), **extra}


class Process:
    """A subprocess whose combined output goes to a file, so that tests can wait for a line."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        with log.open("w") as out:
            self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.popen.poll() is not None:
                raise AssertionError(f"exited ({self.popen.returncode}) before {pattern!r}:\n{self.output()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output()[-4000:]}")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def last_lines(self, n: int) -> list[str]:
        return self.output().strip().splitlines()[-n:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def shutdown(self, timeout: float = 60) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout``; then SIGKILL to whatever
        it started in its session (a daemon's code servers, a code server's run workers)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def server(args: list[str], env: dict[str, str], log: Path) -> Process:
    """A long-lived Dagster or MLflow command (``args[0]`` from this environment's bin folder when
    a bare name) that :meth:`Process.shutdown` stops."""
    program = args[0] if os.sep in args[0] else str(BIN / args[0])
    return Process([sys.executable, "-c", EXEC_WITH_SIGINT, program, *args[1:]], env, log)


def cli(home: HomeLayout, log: Path, *args: str, **env: str) -> Process:
    """`recall-pipeline <args>` on the home, as a user starts it."""
    return Process([str(BIN / "recall-pipeline"), *args], home_env(home, **env), log)


def slot_holder(env: dict[str, str], log: Path, pool: str | None = "warehouse") -> Process:
    """Start a run that holds the warehouse slot (``pool`` None: a run in progress that holds
    no slot); returns once its step is running."""
    message = "holding the warehouse slot" if pool else "running, holding no slot"
    holder = Process([sys.executable, "-c", HOLDER.format(pool=repr(pool), message=message)], env, log)
    holder.wait_for(message, 120)
    return holder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: Process, timeout: float) -> None:
    """Until ``url`` answers 200; fails with ``process``'s output if it exits or ``timeout`` passes."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"exited before answering {url}:\n{process.output()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or busy starting
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{process.output()[-4000:]}")
