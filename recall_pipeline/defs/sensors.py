"""The feedback inbox sensor: one feedback refresh per new file, keyed by its content hash."""

import json

import dagster as dg

from recall_pipeline.core.ingest import feedback
from recall_pipeline.defs.jobs import FEEDBACK_JOB, feedback_run_config
from recall_pipeline.resources import PipelineHome

CURSOR_MEMORY = 1000  # hashes of the most recently requested files kept in the cursor


def read_cursor(cursor: str | None) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(requested: content hash -> file name, seen: file name -> [size, mtime_ns] last tick)."""
    state = json.loads(cursor) if cursor else {}
    if "requested" not in state:  # a cursor written before files had to settle: hashes only
        return state, {}
    return state["requested"], state["seen"]


@dg.sensor(
    job_name=FEEDBACK_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches <home>/inbox: each new feedback file requests a feedback refresh keyed "
                "by the file's content hash (a copy of a file is processed once); a file is taken "
                "once complete (*.part / *.tmp names are skipped; size and mtime unchanged since "
                "the previous tick); a malformed file moves to inbox/rejected with a reason file "
                "and the next one goes on.",
)
def feedback_inbox_sensor(context: dg.SensorEvaluationContext, home: PipelineHome):
    requested, seen = read_cursor(context.cursor)
    settled, seen = feedback.settled_files(home.layout.inbox, seen)
    new, duplicates, rejected = feedback.triage(home.layout.inbox, requested, settled)
    for path, digest in new:
        requested[digest] = path.name
    context.update_cursor(json.dumps({"requested": dict(list(requested.items())[-CURSOR_MEMORY:]),
                                      "seen": seen}))
    if not new:
        return dg.SkipReason(f"no new feedback ({len(seen)} not yet complete, {duplicates} duplicates, "
                             f"{rejected} rejected)")
    return [
        dg.RunRequest(
            run_key=f"feedback-{digest}",
            run_config=feedback_run_config([str(path)]),
            tags={"feedback_file": path.name, "feedback_hash": digest},
        )
        for path, digest in new
    ]
