"""The nightly full refresh."""

import os

import dagster as dg

from recall_pipeline.defs.jobs import recall_job

nightly_refresh = dg.ScheduleDefinition(
    name="nightly_refresh",
    job=recall_job,
    cron_schedule=os.environ.get("RECALL_PIPELINE_NIGHTLY_CRON", "0 2 * * *"),
    execution_timezone=os.environ.get("RECALL_PIPELINE_TIMEZONE", "UTC"),
    description="Full refresh every night (cron RECALL_PIPELINE_NIGHTLY_CRON, default 02:00 in "
                "RECALL_PIPELINE_TIMEZONE, default UTC). Off until started in the UI.",
)
