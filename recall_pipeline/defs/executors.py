"""Which executor runs the steps: in one process (default), a process per step, or Celery workers.

``$RECALL_PIPELINE_EXECUTOR`` chooses, read when the definitions load:

- ``in_process`` (default): every step in the run's process. On 2 cores a process per step costs
  more than it gains, and it needs no service (``make run``).
- ``multiprocess``: a subprocess per step on this machine.
- ``celery``: each step is a task on a Celery queue, run by ``dagster-celery`` workers (started
  with ``celery -A recall_pipeline.runtime.celery_worker worker``, see docs/operations.md), here or on other
  machines. The
  broker is ``$RECALL_PIPELINE_CELERY_BROKER`` (default Redis on 127.0.0.1:6379, db 0), results
  go to ``$RECALL_PIPELINE_CELERY_BACKEND`` (default: the broker's URL), the queue is
  ``$RECALL_PIPELINE_CELERY_QUEUE`` (default ``dagster``; workers must listen on it).

Executors other than ``in_process`` run steps in other processes, which rebuild the job from its
module (``recall_pipeline.definitions.recall_job_definition``) with their own environment: give
them the same ``RECALL_PIPELINE_HOME``, ``RECALL_PIPELINE_SOURCE`` and ``DAGSTER_HOME``. The CLI's
``run`` command always runs in process (``execute_in_process``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from recall_pipeline.settings import BACKEND_ENV, BROKER_ENV, EXECUTOR_ENV, QUEUE_ENV
from recall_pipeline.settings import env as setting

EXECUTORS = ("in_process", "multiprocess", "celery")


def celery_settings(env: Mapping[str, str] = os.environ) -> dict:
    """The celery executor's config: broker, result backend and the queue its tasks go to."""
    broker = setting(BROKER_ENV, env)
    return {"broker": broker, "backend": setting(BACKEND_ENV, env) or broker,
            "config_source": {"task_default_queue": setting(QUEUE_ENV, env),
                              # a worker process holds one task at a time (see celery_worker)
                              "task_acks_late": True, "worker_prefetch_multiplier": 1}}


def executor_from_env(env: Mapping[str, str] = os.environ) -> dg.ExecutorDefinition:
    """The executor ``$RECALL_PIPELINE_EXECUTOR`` names (``in_process`` when unset)."""
    name = setting(EXECUTOR_ENV, env)
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_settings(env), name="celery")
    raise ValueError(f"{EXECUTOR_ENV}={name!r}: use one of {', '.join(EXECUTORS)}")
