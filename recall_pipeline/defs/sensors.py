"""The feedback inbox sensor: one feedback refresh per new file, keyed by its content hash."""

import json

import dagster as dg

from recall_pipeline.core.ingest import feedback
from recall_pipeline.defs.jobs import feedback_refresh_job, feedback_run_config
from recall_pipeline.resources import PipelineHome

CURSOR_MEMORY = 1000  # hashes of the most recently requested files kept in the cursor


@dg.sensor(
    job=feedback_refresh_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches <home>/inbox: each new feedback file requests a feedback refresh keyed "
                "by the file's content hash (a copy of a file is processed once); a malformed "
                "file moves to inbox/rejected with a reason file and the next one goes on.",
)
def feedback_inbox_sensor(context: dg.SensorEvaluationContext, home: PipelineHome):
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    new, duplicates, rejected = feedback.triage(home.layout.inbox, requested)
    for path, digest in new:
        requested[digest] = path.name
    context.update_cursor(json.dumps(dict(list(requested.items())[-CURSOR_MEMORY:])))
    if not new:
        return dg.SkipReason(f"no new feedback ({duplicates} duplicates, {rejected} rejected)")
    return [
        dg.RunRequest(
            run_key=f"feedback-{digest}",
            run_config=feedback_run_config([str(path)]),
            tags={"feedback_file": path.name, "feedback_hash": digest},
        )
        for path, digest in new
    ]
