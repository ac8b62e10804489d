"""Hash sharding of ids and the shard files (Parquet through fsspec)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.shards import ShardStore, shard_of, split_by_shard


def test_shard_of_is_stable_spread_and_independent_of_order_and_type():
    ids = list(range(10_000))
    shards = shard_of(ids, 4)
    assert shards.min() == 0 and shards.max() == 3
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 2_300 and counts.max() < 2_700  # about a quarter each
    assert np.array_equal(shard_of(ids[::-1], 4), shards[::-1])   # per id, not per position
    assert np.array_equal(shard_of([str(i) for i in ids], 4), shards)  # 7 and "7" alike
    # the hash as defined, computed here: BLAKE2b with an 8-byte digest of the id's UTF-8 text,
    # read as a little-endian integer, modulo the shard count (a change of hash would move ids
    # between shards, and stored shard files with them)
    sample = [0, 1, 2, 3, 4, 5, -3, 10**12, "7", "item-42", "café", "ß/京"]
    for n in (2, 3, 5, 16):
        expected = [int.from_bytes(hashlib.blake2b(str(i).encode("utf-8"), digest_size=8).digest(), "little") % n
                    for i in sample]
        assert shard_of(sample, n).tolist() == expected
    assert shard_of(ids, 1).tolist() == [0] * len(ids)
    with pytest.raises(ValueError):
        shard_of(ids, 0)


def test_shard_of_is_the_same_in_another_process_with_another_hash_seed():
    ids = [1, 22, 333, "a", "b", "item-42"]
    code = ("from recall_pipeline.core.shards import shard_of; "
            f"print(shard_of({ids!r}, 5).tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(shard_of(ids, 5).tolist())


def test_split_by_shard_keeps_every_row_once_and_every_shard():
    frame = pl.DataFrame({"item_id": np.arange(50), "text": [f"t{i}" for i in range(50)]})
    parts = split_by_shard(frame, "item_id", 3)
    assert len(parts) == 3 and all(p.columns == ["item_id", "text"] for p in parts)
    assert pl.concat(parts).sort("item_id").equals(frame)
    for shard, part in enumerate(parts):
        assert set(shard_of(part["item_id"].to_list(), 3)) <= {shard}
    assert [p.height for p in split_by_shard(frame.head(0), "item_id", 2)] == [0, 0]


def test_store_round_trips_frames_and_bytes_and_cleans_up(tmp_path):
    store = ShardStore(str(tmp_path / "shards"), "recall_candidates")
    vectors = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    frame = pl.DataFrame({"user_id": ["a", "b", "c", "d", "e"]}).with_columns(pl.Series("v", vectors))
    path = store.write("run-1", "users", frame)
    assert path.endswith("recall_candidates/run-1/users.parquet")
    back = store.read("run-1", "users")
    assert back.equals(frame) and np.array_equal(back["v"].to_numpy(), vectors)
    store.write_bytes("run-1", "index.bin", b"\x00\x01payload")
    assert store.read_bytes("run-1", "index.bin") == b"\x00\x01payload"
    assert store.exists("run-1", "users") and not store.exists("run-1", "other")
    assert not [p for p in (tmp_path / "shards" / "recall_candidates" / "run-1").iterdir() if p.name.endswith(".tmp")]
    store.write("run-2", "users", frame)
    store.write("run-3", "users", frame)
    assert store.runs() == ["run-1", "run-2", "run-3"]
    # run-2 still runs; run-1 was killed: its files go, the current run's stay
    assert store.remove_stale("run-3", still_running=lambda r: r == "run-2") == ["run-1"]
    assert store.runs() == ["run-2", "run-3"]
    store.remove("run-3")
    store.remove("run-3")  # nothing there: no error
    assert store.runs() == ["run-2"]


def test_store_works_on_any_fsspec_url():
    store = ShardStore("memory://recall-shards-test", "item_embeddings")
    frame = pl.DataFrame({"item_id": [3, 1, 2]})
    store.write("r", "todo-0", frame)
    assert store.read("r", "todo-0").equals(frame)
    assert store.runs() == ["r"]
    store.remove("r")
    assert store.runs() == []
