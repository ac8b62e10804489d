"""Where the pipeline keeps its state, from environment variables with embedded defaults.

Every piece of state (the DuckDB warehouse, the MLflow store, the FAISS index, the rating
matrix, reports, the feedback inbox, Dagster's own storage) lives under one home folder, so that
one variable moves a whole deployment and deleting the folder resets it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

from recall_pipeline.core.recall.published_folder import PublishedFolder
from recall_pipeline.core.recall.serving_version import ServingLayout, ServingParts

HOME_ENV = "RECALL_PIPELINE_HOME"
SOURCE_ENV = "RECALL_PIPELINE_SOURCE"
DEFAULT_HOME = ".recall"
SHARDS_URL_ENV = "RECALL_PIPELINE_SHARDS_URL"
SHARDS_ENV = "RECALL_PIPELINE_SHARDS"
SLOT_WAIT_ENV = "RECALL_PIPELINE_SLOT_WAIT_SECONDS"
DEFAULT_SLOT_WAIT_SECONDS = 1800.0
EXECUTOR_ENV = "RECALL_PIPELINE_EXECUTOR"
BROKER_ENV = "RECALL_PIPELINE_CELERY_BROKER"
BACKEND_ENV = "RECALL_PIPELINE_CELERY_BACKEND"
QUEUE_ENV = "RECALL_PIPELINE_CELERY_QUEUE"
RETRAIN_ENV = "RECALL_PIPELINE_RETRAIN_MIN_NEW_INTERACTIONS"
DEFAULT_RETRAIN_MIN_NEW_INTERACTIONS = 1000
FEEDBACK_EVALUATION_ENV = "RECALL_PIPELINE_FEEDBACK_EVALUATION"


@dataclass(frozen=True)
class EnvVar:
    """One environment variable the package reads: its default (empty: none) and what it does."""

    name: str
    default: str
    meaning: str


# Every variable the package reads, in one place: the code reads them through :func:`env`, and
# the configuration reference in the docs is generated from this table (a test fails on a
# ``RECALL_PIPELINE_*`` name in the code that is not here).
ENVIRONMENT: dict[str, EnvVar] = {v.name: v for v in (
    EnvVar(HOME_ENV, DEFAULT_HOME,
           "The home folder that holds all state (warehouse, MLflow store, indexes, models, "
           "reports, inbox, Dagster instance). Deleting it resets everything."),
    EnvVar(SOURCE_ENV, "",
           "A YAML file describing your own data source (paths relative to the file); unset: "
           "the bundled MovieLens data."),
    EnvVar("RECALL_PIPELINE_ENCODER_MODEL", "",
           "The sentence encoder: a local model folder or a hub name; unset: the bundled "
           "all-MiniLM-L6-v2 package."),
    EnvVar("RECALL_PIPELINE_ENCODER_PRECISION", "float32",
           "The encoder's linear layers in ``float32`` or ``bfloat16`` (1.75x to 2.2x the texts/s on a "
           "CPU with native bfloat16, vectors within a cosine of 0.9999; embeddings and indexes record it)."),
    EnvVar("RECALL_PIPELINE_MLFLOW_URI", "",
           "MLflow tracking and registry URI (e.g. postgresql://...); unset: "
           "sqlite under the home's mlflow/ folder."),
    EnvVar("RECALL_PIPELINE_OWNER", "team:recall", "The owner shown on every asset in the UI."),
    EnvVar("RECALL_PIPELINE_NIGHTLY_CRON", "0 2 * * *", "When the nightly full refresh runs."),
    EnvVar("RECALL_PIPELINE_TIMEZONE", "UTC", "The time zone of the nightly schedule."),
    EnvVar("RECALL_PIPELINE_FAILURE_WEBHOOK", "",
           "A URL that each failed run is POSTed to as JSON (``text`` plus the run's fields), "
           "besides its row in ops.run_failures; unset: the table only."),
    EnvVar("RECALL_PIPELINE_FRESHNESS_GRACE_HOURS", "6",
           "The published lists are stale (a failing freshness check in the UI) once older than the "
           "nightly schedule's longest gap between runs plus this many hours."),
    EnvVar(RETRAIN_ENV, str(DEFAULT_RETRAIN_MIN_NEW_INTERACTIONS),
           "A feedback refresh retrains the two-tower model only when training grew by this "
           "many interactions since the serving model was trained."),
    EnvVar(FEEDBACK_EVALUATION_ENV, "defer",
           "``defer``: a feedback refresh publishes without re-evaluating (the nightly run "
           "evaluates); ``run``: it evaluates first."),
    EnvVar(EXECUTOR_ENV, "in_process",
           "Which executor runs the steps: ``in_process``, ``multiprocess`` or ``celery``."),
    EnvVar(BROKER_ENV, "redis://127.0.0.1:6379/0", "The Celery broker of the ``celery`` executor."),
    EnvVar(BACKEND_ENV, "", "The Celery result backend; unset: the broker."),
    EnvVar(QUEUE_ENV, "dagster", "The Celery queue the steps' tasks go to."),
    EnvVar(SHARDS_ENV, "1", "How many shards the sharded steps make unless their config says."),
    EnvVar(SHARDS_URL_ENV, "",
           "Where the sharded steps exchange files (an fsspec URL); unset: the home's shards/ folder."),
    EnvVar(SLOT_WAIT_ENV, str(int(DEFAULT_SLOT_WAIT_SECONDS)),
           "How long a CLI run waits for the warehouse slot before it gives up, in seconds."),
)}


def env(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of a registered variable, or its default when it is unset or blank."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or ENVIRONMENT[name].default


# Dagster's instance settings for a local home: DuckDB allows one writing process, so the steps
# that write the warehouse share one slot of the "warehouse" pool, and a run launched from the UI,
# the schedule or a sensor waits in Dagster's run queue (idle, shown as Queued) while another run
# is in progress, instead of starting and waiting for the slot inside a step; runs whose process is gone are
# recovered before each launch and by the daemon's run monitoring (recall_pipeline.runtime.run_recovery);
# no telemetry (often offline).
INSTANCE_YAML = """\
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 1
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
_BEFORE_THE_RUN_QUEUE = INSTANCE_YAML.replace("  runs:\n    max_concurrent_runs: 1\n", "")
OLD_INSTANCE_YAMLS = (
    """\
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
""",
    _BEFORE_THE_RUN_QUEUE.replace("recall_pipeline.runtime.run_recovery", "recall_pipeline.run_recovery"),
    _BEFORE_THE_RUN_QUEUE,
)


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
        """The EASE model the last ``ease_model`` materialization solved (``core.training.ease.store``);
        a recall run stages it into its serving version (:attr:`serving`), which feedback
        refreshes and ad-hoc recall read."""
        return self.models / "ease" / "ease.npz"

    @property
    def text_cf_model(self) -> Path:
        """The TextCF model (``text_cf_model``) that ranks items nobody has interacted with, served
        by ``recall_candidates`` (route ``text_cf``), which publishes it in its serving version,
        read from there by ``evaluation_report`` (the cold slice)."""
        return self.models / "text_cf" / "text_cf.npz"

    @property
    def sentence_vectors(self) -> Path:
        """Encoded interest sentences kept between runs, one file per stage that encodes them
        (``core.features.sentence_vectors``): a cache, rewritten by each of those stages."""
        return self.models / "sentences"

    @property
    def route_settings(self) -> Path:
        """The fusion the last ``route_settings`` materialization chose on its validation cut, with
        every candidate's figures; read by ``ease_model`` and ``recall_candidates``, which stages
        it into its serving version."""
        return self.models / "route_settings" / "route_settings.json"

    @property
    def serving(self) -> ServingLayout:
        """The serving versions (``serving/CURRENT``, ``serving/versions/<run>/``): the models each
        published run's lists were computed with, made current with those lists once the run's
        checks pass; ad-hoc recall, feedback refreshes and the evaluation read them
        (``core.recall.serving_version``)."""
        return ServingLayout(self.root / "serving")

    def staged_parts(self, two_tower: Path) -> ServingParts:
        """The models as their assets last wrote them (what a full refresh serves), with
        ``two_tower``, a published two-tower version's folder."""
        return ServingParts(self.ease_model, self.text_cf_model, self.route_settings, two_tower, self.item_index)

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
        return env(SHARDS_URL_ENV) or str(self.shards)

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
    return HomeLayout(Path(env(HOME_ENV)).expanduser().resolve())


def default_shards() -> int:
    """How many shards the sharded steps make unless their config says: ``$RECALL_PIPELINE_SHARDS``, default 1."""
    value = env(SHARDS_ENV)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SHARDS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def slot_wait_seconds() -> float:
    """How long a run waits for a concurrency slot before it gives up: ``$RECALL_PIPELINE_SLOT_WAIT_SECONDS``."""
    value = env(SLOT_WAIT_ENV)
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{SLOT_WAIT_ENV}={value!r}: give a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{SLOT_WAIT_ENV}={value!r}: give a positive number of seconds")
    return seconds
