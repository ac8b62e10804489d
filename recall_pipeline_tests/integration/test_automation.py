"""The feedback sensor and schedule, evaluated with Dagster's test utilities."""

import json

import dagster as dg

from recall_pipeline.core.ingest.feedback import content_hash
from recall_pipeline.defs.schedules import nightly_refresh
from recall_pipeline.defs.sensors import feedback_inbox_sensor
from recall_pipeline.resources import PipelineHome
from recall_pipeline.settings import HomeLayout

GOOD = "user_id,item_id,rating,timestamp\n1,31,5,2026-11-01T10:00:00\n"


def tick(home: HomeLayout, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, resources={"home": PipelineHome(root=str(home.root))})
    return feedback_inbox_sensor(context), context.cursor


def settle(home: HomeLayout, cursor: str | None):
    """Two ticks: a file is taken once its size and mtime are the same on two ticks."""
    result, cursor = tick(home, cursor)
    assert isinstance(result, dg.SkipReason) and "not yet complete" in result.skip_message
    return tick(home, cursor)


def test_sensor_requests_each_new_file_once_keyed_by_content(tmp_path):
    home = HomeLayout(tmp_path).create()
    (home.inbox / "first.csv").write_text(GOOD)
    result, cursor = settle(home, None)
    [request] = result
    assert request.run_key.startswith("feedback-") and len(request.run_key) == len("feedback-") + 64
    assert request.run_config["ops"]["feedback_events"]["config"]["files"] == [str(home.inbox / "first.csv")]
    assert json.loads(cursor)["requested"] == {request.run_key.removeprefix("feedback-"): "first.csv"}

    # the same file, copied under another name, yields no second run
    (home.inbox / "copy.csv").write_text(GOOD)
    result, cursor2 = settle(home, cursor)
    assert isinstance(result, dg.SkipReason) and "1 duplicates" in result.skip_message
    assert (home.inbox / "duplicates" / "copy.csv").exists()
    assert json.loads(cursor2)["requested"] == json.loads(cursor)["requested"]


def test_a_file_is_taken_only_once_complete(tmp_path):
    """A file written in two parts between two ticks is not taken until it stops changing; a
    .part file is never read, and is taken once renamed and settled."""
    home = HomeLayout(tmp_path).create()
    rows = [f"1,{item},5,2026-11-01T10:00:00" for item in range(31, 61)]
    target = home.inbox / "slow.csv"
    with target.open("w") as writer:
        writer.write("user_id,item_id,rating,timestamp\n" + "\n".join(rows[:15]) + "\n")
        writer.flush()
        result, cursor = tick(home, None)  # sees the first half
        assert isinstance(result, dg.SkipReason) and "1 not yet complete" in result.skip_message
        writer.write("\n".join(rows[15:]) + "\n")
    result, cursor = tick(home, cursor)  # grew since the last tick: still not taken
    assert isinstance(result, dg.SkipReason) and "1 not yet complete" in result.skip_message
    result, cursor = tick(home, cursor)  # unchanged since the last tick: taken, whole
    [request] = result
    assert request.tags["feedback_hash"] == content_hash(target) and len(target.read_text().splitlines()) == 31

    part = home.inbox / "renamed.csv.part"
    part.write_text(GOOD.replace("31", "77"))
    for _ in range(2):
        result, cursor = tick(home, cursor)
        assert isinstance(result, dg.SkipReason) and "renamed.csv.part" not in cursor
    part.rename(home.inbox / "renamed.csv")
    result, cursor = settle(home, cursor)
    assert [r.tags["feedback_file"] for r in result] == ["renamed.csv"]


def test_sensor_reads_a_cursor_written_before_files_had_to_settle(tmp_path):
    home = HomeLayout(tmp_path).create()
    (home.inbox / "first.csv").write_text(GOOD)
    old_cursor = json.dumps({content_hash(home.inbox / "first.csv"): "first.csv"})
    result, cursor = settle(home, old_cursor)  # already requested before the upgrade
    assert isinstance(result, dg.SkipReason) and json.loads(cursor)["requested"] == json.loads(old_cursor)


def test_malformed_file_is_rejected_and_the_next_good_one_processed(tmp_path):
    home = HomeLayout(tmp_path).create()
    (home.inbox / "a_bad.csv").write_text("who,what\nx,y\n")
    (home.inbox / "b_good.csv").write_text(GOOD.replace("31", "32"))
    result, cursor = settle(home, None)
    assert [r.tags["feedback_file"] for r in result] == ["b_good.csv"]
    reason = (home.inbox / "rejected" / "a_bad.csv.reason.txt").read_text()
    assert "needs a rating or an event_type column" in reason
    assert len(json.loads(cursor)["requested"]) == 1


def test_empty_inbox_skips(tmp_path):
    result, cursor = tick(HomeLayout(tmp_path).create(), None)
    assert isinstance(result, dg.SkipReason) and json.loads(cursor) == {"requested": {}, "seen": {}}


def test_nightly_schedule_targets_the_full_refresh():
    context = dg.build_schedule_context(scheduled_execution_time=None)
    request = nightly_refresh.evaluate_tick(context).run_requests[0]
    assert nightly_refresh.job_name == "recall_job" and request.run_config == {}
    assert nightly_refresh.default_status == dg.DefaultScheduleStatus.STOPPED
