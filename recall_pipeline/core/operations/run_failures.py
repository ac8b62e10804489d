"""Failed runs, recorded in the warehouse (``ops.run_failures``) and posted to a webhook.

A team that runs the pipeline nightly wants every failure in one place it can query next to the
data (which run, which job, which steps, the error, when) and a message where it looks (a chat
or incident webhook), whoever launched the run: the schedule, the sensor, the UI or the CLI.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime

import duckdb
import polars as pl

from recall_pipeline.core.warehouse_sql import insert_by_name

TABLE = "ops.run_failures"
WEBHOOK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class RunFailure:
    """One failed run: its id, job, the steps that failed (comma-separated, empty when the run
    failed outside a step), the error and when Dagster recorded the failure (UTC)."""

    run_id: str
    job_name: str
    steps: str
    error: str
    failed_at: datetime

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame([asdict(self)], schema={"run_id": pl.String, "job_name": pl.String, "steps": pl.String,
                                                    "error": pl.String, "failed_at": pl.Datetime("us")})

    def payload(self) -> bytes:
        """The webhook's JSON body; ``text`` is the one line chat webhooks show."""
        steps = f" in {self.steps}" if self.steps else ""
        body = {"text": f"recall_pipeline: run {self.run_id} of {self.job_name} failed{steps}: {self.error}",
                **asdict(self), "failed_at": self.failed_at.isoformat()}
        return json.dumps(body).encode()


def record(con: duckdb.DuckDBPyConnection, failure: RunFailure) -> None:
    """Add the failure to ``ops.run_failures`` (replacing an earlier record of the same run, so a
    re-delivered failure is kept once)."""
    insert_by_name(con, TABLE, failure.frame(), where="run_id = ?", params=[failure.run_id])


def count(con: duckdb.DuckDBPyConnection) -> int:
    """How many failed runs the table holds."""
    return con.execute(f"select count(*) from {TABLE}").fetchone()[0]


def post(url: str, failure: RunFailure, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> int:
    """POST the failure as JSON to ``url``; the HTTP status (an error status raises)."""
    request = urllib.request.Request(url, data=failure.payload(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status
