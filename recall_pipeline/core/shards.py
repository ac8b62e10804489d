"""Hash sharding of ids and shard files as Parquet in a shared location (any fsspec URL).

The heavy per-item and per-user steps are split into shards that can run on other machines
(the ``celery`` executor's workers): a shard reads its inputs from, and writes its output to,
files under one run folder in a location every worker sees (the home folder by default,
object storage such as ``s3://bucket/recall-shards`` in production), and a single writer merges
the outputs into DuckDB. An id's shard is a hash of the id's text, so it does not depend on the
process, the machine, the id's order or which other ids exist: the same id lands in the same
shard run after run.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import fsspec
import numpy as np
import polars as pl


def shard_of(ids: Iterable, n_shards: int) -> np.ndarray:
    """The shard (0 .. n_shards - 1) of every id: BLAKE2b of the id's text, modulo ``n_shards``.

    Stable across processes and runs (unlike Python's salted ``hash``) and the same for the
    integer 7 and the string "7", so a source's id type does not move ids between shards."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    ids = list(ids)
    if n_shards == 1:
        return np.zeros(len(ids), dtype=np.int64)
    digests = (int.from_bytes(hashlib.blake2b(str(i).encode("utf-8"), digest_size=8).digest(), "little")
               for i in ids)
    return np.fromiter((d % n_shards for d in digests), dtype=np.int64, count=len(ids))


def split_by_shard(frame: pl.DataFrame, id_column: str, n_shards: int) -> list[pl.DataFrame]:
    """``frame``'s rows split by the shard of ``id_column``; every shard present, maybe empty."""
    shard = pl.Series("_shard", shard_of(frame[id_column].to_list(), n_shards))
    tagged = frame.with_columns(shard)
    return [tagged.filter(pl.col("_shard") == i).drop("_shard") for i in range(n_shards)]


@dataclass(frozen=True)
class ShardStore:
    """Shard files of one asset under ``<url>/<asset>/<run id>/``: written whole (under a
    temporary name, then renamed), read back by name, removed by the merge; a killed run's
    folder is removed by the next run of the asset (:meth:`remove_stale`)."""

    url: str
    asset: str

    def _fs(self):
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    def folder(self, run_id: str) -> str:
        """The run's folder, as the file system names it (a local path, or ``bucket/key``)."""
        _, root = self._fs()
        return f"{root}/{self.asset}/{run_id}"

    def _write_whole(self, run_id: str, file_name: str, write: Callable) -> str:
        fs, _ = self._fs()
        folder = self.folder(run_id)
        fs.makedirs(folder, exist_ok=True)
        path, temporary = f"{folder}/{file_name}", f"{folder}/.{file_name}.{uuid.uuid4().hex}.tmp"
        with fs.open(temporary, "wb") as out:
            write(out)
        fs.mv(temporary, path)
        return path

    def write(self, run_id: str, name: str, frame: pl.DataFrame) -> str:
        """Write ``frame`` as ``<run folder>/<name>.parquet``; returns that path."""
        return self._write_whole(run_id, f"{name}.parquet", frame.write_parquet)

    def read(self, run_id: str, name: str) -> pl.DataFrame:
        fs, _ = self._fs()
        with fs.open(f"{self.folder(run_id)}/{name}.parquet", "rb") as source:
            return pl.read_parquet(source)

    def write_bytes(self, run_id: str, file_name: str, data: bytes) -> str:
        """Write ``data`` as ``<run folder>/<file_name>`` (e.g. a serialized index)."""
        return self._write_whole(run_id, file_name, lambda out: out.write(data))

    def read_bytes(self, run_id: str, file_name: str) -> bytes:
        fs, _ = self._fs()
        with fs.open(f"{self.folder(run_id)}/{file_name}", "rb") as source:
            return source.read()

    def exists(self, run_id: str, name: str) -> bool:
        return self.has_file(run_id, f"{name}.parquet")

    def has_file(self, run_id: str, file_name: str) -> bool:
        """Whether the run's folder holds ``file_name`` (a frame's is ``<name>.parquet``)."""
        fs, _ = self._fs()
        return fs.exists(f"{self.folder(run_id)}/{file_name}")

    def remove(self, run_id: str) -> None:
        """Remove the run's folder (nothing if it is not there)."""
        fs, _ = self._fs()
        if fs.exists(self.folder(run_id)):
            fs.rm(self.folder(run_id), recursive=True)

    def runs(self) -> list[str]:
        """Run ids that have a folder of this asset."""
        fs, root = self._fs()
        base = f"{root}/{self.asset}"
        if not fs.exists(base):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))

    def remove_stale(self, current_run_id: str, still_running: Callable[[str], bool]) -> list[str]:
        """Remove the folders of other runs that are no longer running (killed or failed runs
        leave theirs); returns their run ids."""
        stale = [r for r in self.runs() if r != current_run_id and not still_running(r)]
        for run_id in stale:
            self.remove(run_id)
        return stale


@dataclass(frozen=True)
class ShardTask:
    """One shard's work as the plan step hands it to a shard step (on any worker): where the
    run's files are, which shard, and the step's settings."""

    url: str
    asset: str
    run_id: str
    shard: int
    params: dict

    @property
    def store(self) -> ShardStore:
        return ShardStore(self.url, self.asset)
