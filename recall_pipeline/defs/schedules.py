"""The nightly full refresh."""

import dagster as dg

from recall_pipeline.defs.jobs import recall_job
from recall_pipeline.settings import env

nightly_refresh = dg.ScheduleDefinition(
    name="nightly_refresh",
    job=recall_job,
    cron_schedule=env("RECALL_PIPELINE_NIGHTLY_CRON"),
    execution_timezone=env("RECALL_PIPELINE_TIMEZONE"),
    description="Full refresh every night (cron RECALL_PIPELINE_NIGHTLY_CRON, default 02:00 in "
                "RECALL_PIPELINE_TIMEZONE, default UTC). Off until started in the UI.",
)
