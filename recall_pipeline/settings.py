"""Where the pipeline keeps its state, from environment variables with embedded defaults.

Every piece of state (the DuckDB warehouse, the MLflow store, the FAISS index, the rating
matrix, reports, the feedback inbox, Dagster's own storage) lives under one home folder, so that
one variable moves a whole deployment and deleting the folder resets it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recall_pipeline.core.recall.published_folder import PublishedFolder

HOME_ENV = "RECALL_PIPELINE_HOME"
SOURCE_ENV = "RECALL_PIPELINE_SOURCE"
DEFAULT_HOME = ".recall"

# Where the sharded steps exchange files (an fsspec URL; default the home's shards/ folder) and
# how many shards they make (default 1: on one machine the single shard is the fastest).
SHARDS_URL_ENV = "RECALL_PIPELINE_SHARDS_URL"
SHARDS_ENV = "RECALL_PIPELINE_SHARDS"

SLOT_WAIT_ENV = "RECALL_PIPELINE_SLOT_WAIT_SECONDS"
DEFAULT_SLOT_WAIT_SECONDS = 1800.0

# Dagster's instance settings for a local home: DuckDB allows one writing process, so the steps
# that write the warehouse share one slot of the "warehouse" pool; runs whose process is gone are
# recovered before each launch and by the daemon's run monitoring (recall_pipeline.runtime.run_recovery);
# no telemetry (often offline).
INSTANCE_YAML = """\
concurrency:
  pools:
    default_limit: 1
run_launcher:
  module: recall_pipeline.runtime.run_recovery
  class: RecoveringRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 15
  free_slots_after_run_end_seconds: 5
telemetry:
  enabled: false
"""
# Earlier defaults: a home whose dagster.yaml is exactly one of these gets the current one.
# (A dagster.yaml edited by hand that still names ``recall_pipeline.run_recovery`` keeps
# working too: that module re-exports the launcher from its new place.)
OLD_INSTANCE_YAMLS = ("""\
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
""", INSTANCE_YAML.replace("recall_pipeline.runtime.run_recovery", "recall_pipeline.run_recovery"))


@dataclass(frozen=True)
class HomeLayout:
    """The paths inside the home folder; one place names them all."""

    root: Path

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def published(self) -> Path:
        """The read copy of the recall and evaluation tables that users query."""
        return self.root / "published.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def item_index(self) -> Path:
        """The FAISS index of LM item embeddings (``faiss_index`` asset)."""
        return self.indexes / "items"

    @property
    def two_tower_index(self) -> Path:
        """The ``two_tower_index`` asset's folder: versions of the serving model, each with the FAISS
        index of its item vectors, behind one pointer file (``two_tower_serving``)."""
        return self.indexes / "two_tower"

    @property
    def two_tower_pointer(self) -> Path:
        """The file that names the serving version (a folder of ``two_tower_versions``)."""
        return self.two_tower_index / "CURRENT"

    @property
    def two_tower_versions(self) -> Path:
        """One folder per published version: ``model/``, ``items.faiss`` and ``manifest.json``."""
        return self.two_tower_index / "versions"

    @property
    def two_tower_flat_layout(self) -> tuple[str, ...]:
        """What homes before the versioned layout kept directly in ``two_tower_index`` (glob
        patterns): the model folder, the index and its manifest, and their temporary names. The
        next ``two_tower_index`` materialization removes them."""
        return ("model", "items.faiss", "manifest.json", ".model-*", ".items.faiss.*.tmp", ".manifest.json.*.tmp")

    @property
    def two_tower_serving(self) -> PublishedFolder:
        """The published serving versions: ``current()`` for readers, ``publish`` for the asset."""
        return PublishedFolder(self.two_tower_pointer, self.two_tower_versions,
                               legacy=self.two_tower_flat_layout, publisher="two_tower_index")

    def trained_model(self, dagster_run_id: str) -> Path:
        """Where ``recall_model`` saves the model it trains in a run, before registering it."""
        return self.models / "two_tower" / dagster_run_id

    @property
    def ease_model(self) -> Path:
        """The EASE model the last full refresh solved (``recall_candidates``), which feedback
        refreshes reuse for the users whose history changed (``core.recall.ease_store``)."""
        return self.models / "ease" / "ease.npz"

    @property
    def text_cf_model(self) -> Path:
        """The TextCF model (``text_cf_model``) that ranks items nobody has interacted with, read
        by ``recall_candidates`` (route ``text_cf``) and ``evaluation_report`` (the cold slice)."""
        return self.models / "text_cf" / "text_cf.npz"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def latest_report(self) -> Path:
        return self.reports / "latest.html"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def shards(self) -> Path:
        """The default shard location: the sharded steps' input and output files, one folder
        per asset and run (``$RECALL_PIPELINE_SHARDS_URL`` moves it, e.g. to object storage)."""
        return self.root / "shards"

    def shards_url(self) -> str:
        """``$RECALL_PIPELINE_SHARDS_URL`` if set, else :attr:`shards`."""
        return os.environ.get(SHARDS_URL_ENV) or str(self.shards)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def create(self) -> "HomeLayout":
        """Create every folder, and Dagster's instance file with a one-writer pool for DuckDB."""
        for folder in (self.root, self.indexes, self.models, self.reports,
                       self.inbox, self.mlflow_artifacts, self.dagster_home):
            folder.mkdir(parents=True, exist_ok=True)
        instance_yaml = self.dagster_home / "dagster.yaml"
        if not instance_yaml.exists() or instance_yaml.read_text() in OLD_INSTANCE_YAMLS:
            instance_yaml.write_text(INSTANCE_YAML)  # an edited file is the user's: left alone
        return self


def home_layout() -> HomeLayout:
    """The home folder: ``$RECALL_PIPELINE_HOME``, default ``./.recall``, as an absolute path."""
    return HomeLayout(Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser().resolve())


def default_shards() -> int:
    """How many shards the sharded steps make unless their config says: ``$RECALL_PIPELINE_SHARDS``, default 1."""
    value = os.environ.get(SHARDS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SHARDS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def slot_wait_seconds() -> float:
    """How long a run waits for a concurrency slot before it gives up: ``$RECALL_PIPELINE_SLOT_WAIT_SECONDS``."""
    value = os.environ.get(SLOT_WAIT_ENV, "")
    try:
        seconds = float(value) if value.strip() else DEFAULT_SLOT_WAIT_SECONDS
    except ValueError:
        raise ValueError(f"{SLOT_WAIT_ENV}={value!r}: give a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{SLOT_WAIT_ENV}={value!r}: give a positive number of seconds")
    return seconds
