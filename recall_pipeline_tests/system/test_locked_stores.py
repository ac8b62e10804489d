"""An MLflow store that another process holds locked fails with a clear error naming it.

System tier: each test waits out MLflow's fixed 20-second SQLite busy timeout (its sessions set
``PRAGMA busy_timeout = 20000`` whatever the URI says), time in which other tests run.
"""

from __future__ import annotations

import pytest

from recall_pipeline.core.training import model_registry


def test_only_a_missing_champion_means_none_a_locked_store_fails_clearly(tmp_path):
    import sqlite3

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    assert model_registry.champion_version(uri) is None                 # no registered model
    model_registry.client(uri).create_registered_model(model_registry.MODEL_NAME)
    assert model_registry.champion_version(uri) is None                 # a model, no alias
    holder = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    holder.execute("begin exclusive")                                    # another process writing
    try:
        with pytest.raises(model_registry.RegistryUnavailableError, match="registry.db is locked, unreachable or broken .*database is locked"):
            model_registry.champion_version(uri)
    finally:
        holder.execute("rollback")
        holder.close()


def test_a_store_locked_during_a_run_fails_with_the_store_named(tmp_path):
    import sqlite3

    from recall_pipeline.resources import MlflowTracking

    tracking = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "a"))
    with tracking.start_run("creates the store", {}) as (tracker, _):
        tracker.log_metric("x", 1.0)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("begin exclusive")
    try:
        with pytest.raises(model_registry.RegistryUnavailableError, match="mlflow.db is locked, unreachable or broken"):
            with tracking.start_run("blocked", {}) as (tracker, _):
                tracker.log_metric("x", 2.0)
    finally:
        holder.execute("rollback")
        holder.close()
