"""The published lists' freshness checks: passing after a publish, failing once the lists are
older than the nightly schedule's longest gap plus the grace, evaluated by a sensor that is on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from recall_pipeline.definitions import build_definitions
from recall_pipeline.runtime.cron import longest_gap
from recall_pipeline.settings import HomeLayout

PUBLISHED_AT = datetime(2026, 12, 1, 2, 30, tzinfo=timezone.utc)


def evaluate(tmp_path, hours_later: float) -> dict[str, dg.AssetCheckEvaluation]:
    """Publish both assets at PUBLISHED_AT, then run the freshness checks ``hours_later``."""
    definitions = build_definitions(HomeLayout(tmp_path))
    keys = {key for key in definitions.resolve_asset_graph().asset_check_keys if key.name == "freshness_check"}
    job = definitions.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection=keys)
    with dg.instance_for_test() as instance:
        with freeze_time(PUBLISHED_AT):
            for asset in ("recall_candidates", "published_warehouse"):
                instance.report_runless_asset_event(dg.AssetMaterialization(asset))
        with freeze_time(PUBLISHED_AT + timedelta(hours=hours_later)):
            result = job.execute_in_process(instance=instance)
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_fresh_after_a_publish_stale_past_the_schedule_and_the_grace(tmp_path, monkeypatch):
    monkeypatch.delenv("RECALL_PIPELINE_FRESHNESS_GRACE_HOURS", raising=False)
    fresh = evaluate(tmp_path, 29.5)  # nightly: 24 h, plus 6 h of grace
    assert set(fresh) == {"recall_candidates", "published_warehouse"}
    assert all(e.passed for e in fresh.values())
    stale = evaluate(tmp_path, 30.5)
    assert not any(e.passed for e in stale.values())
    assert {e.severity for e in stale.values()} == {dg.AssetCheckSeverity.ERROR}


def test_the_grace_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RECALL_PIPELINE_FRESHNESS_GRACE_HOURS", "0")
    assert all(e.passed for e in evaluate(tmp_path, 23.5).values())
    assert not any(e.passed for e in evaluate(tmp_path, 24.5).values())
    monkeypatch.setenv("RECALL_PIPELINE_FRESHNESS_GRACE_HOURS", "-1")
    with pytest.raises(ValueError, match="must not be negative"):
        build_definitions(HomeLayout(tmp_path))


def test_the_sensor_that_evaluates_them_is_on(tmp_path):
    sensor = build_definitions(HomeLayout(tmp_path)).resolve_sensor_def("published_freshness_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


@pytest.mark.parametrize("cron, hours", [("0 2 * * *", 24), ("0 * * * *", 1), ("0 2 * * 1-5", 72),
                                         ("30 1 * * 0", 168)])
def test_a_schedules_longest_gap(cron, hours):
    assert longest_gap(cron, "UTC", PUBLISHED_AT) == timedelta(hours=hours)
