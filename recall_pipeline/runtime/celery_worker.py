"""The Celery app that ``dagster-celery`` workers run for this project:
``celery -A recall_pipeline.runtime.celery_worker worker -Q <queue> -c <processes>``.

It is ``dagster_celery.app`` (the same task, ``execute_plan``) configured from the same
environment variables as the ``celery`` executor (``recall_pipeline.defs.executors``): broker,
result backend and queue, so that the run's process and its workers cannot disagree. Tasks are
acknowledged after they finish and a worker process reserves one at a time, so a long shard
never holds a second one back while another worker is idle.
"""

from __future__ import annotations

from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from recall_pipeline.defs.executors import celery_settings

_settings = celery_settings()
app = make_app({
    "broker": _settings["broker"],
    "backend": _settings["backend"],
    "include": [],
    "config_source": dict_wrapper({**DEFAULT_CONFIG, **_settings["config_source"]}),
})
execute_plan = create_task(app)
