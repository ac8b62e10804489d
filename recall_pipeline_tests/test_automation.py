"""The feedback sensor and schedule, evaluated with Dagster's test utilities."""

import json

import dagster as dg

from recall_pipeline.defs.schedules import nightly_refresh
from recall_pipeline.defs.sensors import feedback_inbox_sensor
from recall_pipeline.resources import PipelineHome
from recall_pipeline.settings import HomeLayout

GOOD = "user_id,item_id,rating,timestamp\n1,31,5,2026-11-01T10:00:00\n"


def tick(home: HomeLayout, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, resources={"home": PipelineHome(root=str(home.root))})
    return feedback_inbox_sensor(context), context.cursor


def test_sensor_requests_each_new_file_once_keyed_by_content(tmp_path):
    home = HomeLayout(tmp_path).create()
    (home.inbox / "first.csv").write_text(GOOD)
    result, cursor = tick(home, None)
    [request] = result
    assert request.run_key.startswith("feedback-") and len(request.run_key) == len("feedback-") + 64
    assert request.run_config["ops"]["feedback_events"]["config"]["files"] == [str(home.inbox / "first.csv")]
    assert json.loads(cursor) == {request.run_key.removeprefix("feedback-"): "first.csv"}

    # the same file, copied under another name, yields no second run
    (home.inbox / "copy.csv").write_text(GOOD)
    result, cursor2 = tick(home, cursor)
    assert isinstance(result, dg.SkipReason) and "1 duplicates" in result.skip_message
    assert (home.inbox / "duplicates" / "copy.csv").exists()
    assert cursor2 == cursor


def test_malformed_file_is_rejected_and_the_next_good_one_processed(tmp_path):
    home = HomeLayout(tmp_path).create()
    (home.inbox / "a_bad.csv").write_text("who,what\nx,y\n")
    (home.inbox / "b_good.csv").write_text(GOOD.replace("31", "32"))
    result, cursor = tick(home, None)
    assert [r.tags["feedback_file"] for r in result] == ["b_good.csv"]
    reason = (home.inbox / "rejected" / "a_bad.csv.reason.txt").read_text()
    assert "needs a rating or an event_type column" in reason
    assert len(json.loads(cursor)) == 1


def test_empty_inbox_skips(tmp_path):
    result, cursor = tick(HomeLayout(tmp_path).create(), None)
    assert isinstance(result, dg.SkipReason) and cursor == "{}"


def test_nightly_schedule_targets_the_full_refresh():
    context = dg.build_schedule_context(scheduled_execution_time=None)
    request = nightly_refresh.evaluate_tick(context).run_requests[0]
    assert nightly_refresh.job_name == "recall_job" and request.run_config == {}
    assert nightly_refresh.default_status == dg.DefaultScheduleStatus.STOPPED
