"""The run-failure sensor: every failed run of this code location, whoever launched it, lands in
``ops.run_failures`` and, when ``$RECALL_PIPELINE_FAILURE_WEBHOOK`` is set, is posted there."""

from datetime import datetime, timezone

import dagster as dg

from recall_pipeline.core import run_failures
from recall_pipeline.resources import Warehouse
from recall_pipeline.runtime.guarded_run import own_error
from recall_pipeline.settings import env


def failure_of(context: dg.RunFailureSensorContext) -> run_failures.RunFailure:
    """The failure as plain data: the failed steps and their errors, else the run's message."""
    steps = context.get_step_failure_events()
    errors = [f"{event.step_key}: {': '.join(own_error(event.event_specific_data.error))}"
              for event in steps if event.event_specific_data and event.event_specific_data.error]
    record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
    ended = record.end_time if record and record.end_time else datetime.now(timezone.utc).timestamp()
    return run_failures.RunFailure(
        run_id=context.dagster_run.run_id, job_name=context.dagster_run.job_name,
        steps=",".join(event.step_key for event in steps),
        error="; ".join(errors) or (context.failure_event.message or "").strip(),
        failed_at=datetime.fromtimestamp(ended, timezone.utc).replace(tzinfo=None))


@dg.run_failure_sensor(
    name="run_failure_recorder",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run of this code location (run id, job, failed steps, error, "
                "time) in the warehouse table ops.run_failures and, when RECALL_PIPELINE_FAILURE_WEBHOOK "
                "is set, POSTs it there as JSON.",
)
def run_failure_recorder(context: dg.RunFailureSensorContext, warehouse: Warehouse) -> None:
    failure = failure_of(context)
    with warehouse.connect() as con:
        run_failures.record(con, failure)
    url = env("RECALL_PIPELINE_FAILURE_WEBHOOK")
    if url:
        run_failures.post(url, failure)
    context.log.info(f"recorded the failure of run {failure.run_id} ({failure.steps or 'no step'})"
                     + (" and posted it" if url else ""))
