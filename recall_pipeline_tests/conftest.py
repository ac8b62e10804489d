"""Shared fixtures (the bundled data, loaded once; small hand-built frames) and the tiers.

Each test's tier is the folder it lives in, given to it as a marker:

- ``unit/``: library code on data the test builds (or the bundled data), one process, no
  Dagster run: ``make test-fast``;
- ``integration/``: Dagster jobs run in process against real DuckDB files and MLflow stores;
- ``system/``: real processes and services: the CLI killed mid-run, the Dagster UI, PostgreSQL,
  Redis and RabbitMQ, Celery workers, the docker files.

``make test`` runs all three (what CI runs); ``pytest -m unit`` (or ``integration``, ``system``)
runs one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from recall_pipeline.settings import HOME_ENV, SOURCE_ENV, HomeLayout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests never touch the user's home folder or Dagster instance (the Makefile exports both).
_TEST_HOME = HomeLayout(Path(tempfile.mkdtemp(prefix="recall-test-home-"))).create()
os.environ[HOME_ENV] = str(_TEST_HOME.root)
os.environ["DAGSTER_HOME"] = str(_TEST_HOME.dagster_home)
os.environ.pop(SOURCE_ENV, None)
atexit.register(shutil.rmtree, _TEST_HOME.root, ignore_errors=True)


TIERS = ("unit", "integration", "system")
# Seconds each of the slowest files took in a whole run on two workers (pytest --durations=0,
# 2026-12-06, 2-core machine): they are started longest first, so that the two workers finish
# together (longest-processing-time-first scheduling); every other file follows, slowest tier
# first. Only the order depends on these figures, never a result.
SLOW_FILES = {
    "system/test_crash_recovery.py": 120, "system/test_production_layout.py": 89,
    "integration/test_end_to_end.py": 71, "system/test_locked_stores.py": 28,
    "integration/test_fusion_choice.py": 55, "system/test_webserver.py": 39,
    "integration/test_memory_ceiling.py": 37,
    "integration/test_feedback_refresh.py": 45, "system/test_distributed.py": 30,
    "integration/test_feedback_burst.py": 29, "unit/evaluation/test_protocol.py": 26,
    "unit/training/test_two_tower.py": 14, "integration/test_user_files.py": 13,
    "system/test_run_monitoring.py": 11, "unit/training/test_champion_rule.py": 7,
    "unit/training/test_model_registry.py": 5,
}


def pytest_collection_modifyitems(config, items):
    """Mark every test with the tier of its folder (a test outside the three is an error), and
    order the files longest first (``SLOW_FILES``, then the slowest tier first): with parallel
    workers the long files start at once and the short ones fill the gaps at the end, instead of
    one worker finishing alone."""
    root = Path(__file__).parent
    tiers = {}
    for item in items:
        tier = Path(str(item.path)).relative_to(root).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of {TIERS}")
        item.add_marker(getattr(pytest.mark, tier))
        tiers[item.nodeid] = tier
    def order(item) -> tuple[int, int]:
        relative = Path(str(item.path)).relative_to(root).as_posix()
        return -SLOW_FILES.get(relative, 0), -TIERS.index(tiers[item.nodeid])

    items.sort(key=order)  # stable: the order within a file is kept


@pytest.fixture(scope="session", autouse=True)
def empty_mlflow_store(tmp_path_factory):
    """A new MLflow store runs MLflow's database migrations (about 3 s here), and most tests
    start from a new home: each test process has MLflow make one empty store, and the homes its
    tests create (``HomeLayout.create``) start with a copy of it, byte for byte what MLflow
    would have made there. Homes the code creates itself (``recall-pipeline init-home``, a clean
    clone's ``make run``) and the production layout's PostgreSQL store still run the migrations."""
    template = tmp_path_factory.getbasetemp() / f"mlflow-template-{os.getpid()}.db"
    create = HomeLayout.create

    def create_with_store(self: HomeLayout) -> HomeLayout:
        home = create(self)
        if not home.mlflow_db.exists():
            if not template.exists():  # made on first use: the unit tier rarely needs it
                import mlflow

                mlflow.MlflowClient(f"sqlite:///{template}").search_experiments()
            home.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, home.mlflow_db)
        return home

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HomeLayout, "create", create_with_store)
        yield template


@pytest.fixture(scope="session")
def bundled_raw() -> tuple[pl.DataFrame, pl.DataFrame]:
    from recall_pipeline.core.ingest.sources import load_bundled

    return load_bundled(batch_id="test-batch")


@pytest.fixture(scope="session")
def bundled_split(bundled_raw) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cleaned items, protocol split) of the full bundled data set."""
    from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions
    from recall_pipeline.core.ingest.item_text import clean_items
    from recall_pipeline.core.features.split import split_interactions

    raw_interactions, raw_items = bundled_raw
    items, _ = clean_items(raw_items)
    clean, _ = clean_interactions(raw_interactions, items["item_id"], CleaningRules(), datetime.now())
    return items, split_interactions(clean)


@pytest.fixture(scope="session")
def encoder():
    from recall_pipeline.core.features.encode import TextEncoder

    return TextEncoder(batch_size=16)


def raw_frame(rows: list[dict], source_file: str = "ratings.csv") -> pl.DataFrame:
    """A raw interactions frame (text values) with provenance, as the loaders produce."""
    frame = pl.DataFrame(rows, schema={c: pl.String for c in ("user_id", "item_id", "rating", "timestamp")})
    return frame.with_columns(
        source_file=pl.lit(source_file),
        source_row=pl.int_range(1, frame.height + 1, dtype=pl.Int64),
        batch_id=pl.lit("b1"),
        loaded_at=pl.lit(datetime(2026, 1, 1)),
    )
