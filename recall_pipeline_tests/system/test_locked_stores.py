"""An MLflow store that another process holds locked fails with a clear error naming it.

System tier: each case waits out MLflow's fixed 20-second SQLite busy timeout (its sessions set
``PRAGMA busy_timeout = 20000`` whatever the URI says); the two cases wait side by side, in
threads, each on a store of its own.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from recall_pipeline.core.training import model_registry


@contextmanager
def locked(db: Path):
    """Another connection holding an exclusive lock on ``db`` (a process writing)."""
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("begin exclusive")
    try:
        yield
    finally:
        holder.execute("rollback")
        holder.close()


def champion_when_locked(folder: Path) -> dict:
    uri = f"sqlite:///{folder / 'registry.db'}"
    seen = {"no model": model_registry.champion_version(uri)}
    model_registry.client(uri).create_registered_model(model_registry.MODEL_NAME)
    seen["a model, no alias"] = model_registry.champion_version(uri)
    with locked(folder / "registry.db"):
        try:
            model_registry.champion_version(uri)
        except model_registry.RegistryUnavailableError as exc:
            seen["locked"] = exc
    return seen


def run_when_locked(folder: Path) -> Exception | None:
    from recall_pipeline.resources import MlflowTracking

    tracking = MlflowTracking(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=str(folder / "a"))
    with tracking.start_run("creates the store", {}) as (tracker, _):
        tracker.log_metric("x", 1.0)
    with locked(folder / "mlflow.db"):
        try:
            with tracking.start_run("blocked", {}) as (tracker, _):
                tracker.log_metric("x", 2.0)
        except model_registry.RegistryUnavailableError as exc:
            return exc
    return None


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    with ThreadPoolExecutor(2) as pool:
        champion = pool.submit(champion_when_locked, tmp_path_factory.mktemp("registry"))
        run = pool.submit(run_when_locked, tmp_path_factory.mktemp("tracking"))
        return champion.result(), run.result()


def test_only_a_missing_champion_means_none_a_locked_store_fails_clearly(outcomes):
    seen, _ = outcomes
    assert seen["no model"] is None and seen["a model, no alias"] is None
    assert isinstance(seen.get("locked"), model_registry.RegistryUnavailableError)
    assert "registry.db is locked, unreachable or broken" in str(seen["locked"])
    assert "database is locked" in str(seen["locked"])


def test_a_store_locked_during_a_run_fails_with_the_store_named(outcomes):
    _, error = outcomes
    assert isinstance(error, model_registry.RegistryUnavailableError)
    assert "mlflow.db is locked, unreachable or broken" in str(error)
