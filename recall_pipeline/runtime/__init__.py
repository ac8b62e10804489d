"""Runtime plumbing around Dagster: running a job so it can always be stopped, recovering runs
whose process died, the run launcher and the Celery app of the workers.

This is the one package allowed to import Dagster's private API (``dagster._...``); a test fails
on such an import anywhere else, so an upgrade of Dagster has one place to check. Checked
against the version below (``pyproject.toml`` pins it); the tests of this package exercise each
private name on real processes and a real instance.
"""

DAGSTER_VERSION_CHECKED = "1.13.27"
