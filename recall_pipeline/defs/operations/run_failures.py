"""The run-failure sensor: every failed run of this code location, whoever launched it, lands in
``ops.run_failures`` and, when ``$RECALL_PIPELINE_FAILURE_WEBHOOK`` is set, is posted there.

The table is an asset of the graph (``run_failures``, group ``operations``) that the sensor
reports as materialized with each failure it records: the UI shows the latest failure on that
asset's page, and the table's history as its materializations."""

from datetime import datetime, timezone

import dagster as dg

from recall_pipeline.core.operations import run_failures
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


run_failures_table = dg.AssetSpec(
    "run_failures", group_name="operations", kinds={"duckdb"},
    description=f"{run_failures.TABLE}: one row per failed run of this code location (run id, job, failed "
                "steps, error, time), written by the run_failure_recorder sensor; query it with SQL.",
)


def recorded(failure: run_failures.RunFailure, rows: int) -> dg.AssetMaterialization:
    """The table's new state, as the UI shows it: the failure just recorded, and the row count."""
    return dg.AssetMaterialization(
        asset_key=run_failures_table.key,
        description=f"run {failure.run_id} of {failure.job_name} failed",
        metadata={"run_id": failure.run_id, "job_name": failure.job_name, "steps": failure.steps,
                  "error": dg.MetadataValue.md(f"```\n{failure.error}\n```"),
                  "failed_at": f"{failure.failed_at.isoformat(sep=' ', timespec='seconds')} UTC",
                  "dagster/row_count": rows, "table": run_failures.TABLE})


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
        rows = run_failures.count(con)
    context.instance.report_runless_asset_event(recorded(failure, rows))
    url = env("RECALL_PIPELINE_FAILURE_WEBHOOK")
    if url:
        run_failures.post(url, failure)
    context.log.info(f"recorded the failure of run {failure.run_id} ({failure.steps or 'no step'})"
                     + (" and posted it" if url else ""))
