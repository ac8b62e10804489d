"""Freshness of what users query: a check that fails in the UI once the published lists are
older than the nightly schedule's period plus a grace, and the sensor that evaluates it."""

import warnings
from contextlib import contextmanager
from datetime import timedelta

import dagster as dg

from recall_pipeline.defs.schedules import nightly_refresh
from recall_pipeline.runtime.cron import longest_gap
from recall_pipeline.settings import env

PUBLISHED = ("recall_candidates", "published_warehouse")


def staleness_limit() -> timedelta:
    """The schedule's longest gap between runs plus ``$RECALL_PIPELINE_FRESHNESS_GRACE_HOURS``."""
    grace = float(env("RECALL_PIPELINE_FRESHNESS_GRACE_HOURS"))
    if grace < 0:
        raise ValueError(f"RECALL_PIPELINE_FRESHNESS_GRACE_HOURS must not be negative, got {grace:g}")
    return longest_gap(nightly_refresh.cron_schedule, nightly_refresh.execution_timezone) + timedelta(hours=grace)


def published_freshness_checks() -> list[dg.AssetChecksDefinition]:
    """A last-update check on each asset whose output users query (severity ERROR: a stale list
    is a failure, not a warning)."""
    with _superseded_but_wanted():
        return list(dg.build_last_update_freshness_checks(
            assets=list(PUBLISHED), lower_bound_delta=staleness_limit(), severity=dg.AssetCheckSeverity.ERROR))


def freshness_sensor(checks: list[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """Evaluates the freshness checks every 10 minutes (on by default, like the inbox sensor)."""
    with _superseded_but_wanted():
        return dg.build_sensor_for_freshness_checks(freshness_checks=checks, minimum_interval_seconds=600,
                                                    name="published_freshness_sensor",
                                                    default_status=dg.DefaultSensorStatus.RUNNING)


@contextmanager
def _superseded_but_wanted():
    """Dagster 1.13 steers towards ``FreshnessPolicy`` on the asset, whose state the UI shows as
    a badge rather than as an asset check; a check is what the other quality gates here are
    (it fails, with its metadata, on the asset's checks tab and in the run that evaluates it),
    so the check builders are kept, without their warning at every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*superseded.*")
        yield
