"""``recall_candidates`` in shards: what the plan step exports, what one shard computes.

The plan step (the only one that reads the warehouse) writes everything a shard needs into the
run's shard folder: the catalogue and its LM vectors, the rating matrix, the profiles and
interests, the serving model's user vectors, both FAISS indexes (serialized, after their
manifests were checked against what they serve), the TextCF model, and the users to compute with their shard. A
shard reads only that folder, so it runs on any worker that sees the shard location, needs no
warehouse lock and no torch, and writes its users' candidate rows as Parquet, one file per
block of users (a shard's memory does not grow with its users). Users are
ranked one by one with the models of the whole matrix (EASE fitted on all of it in every shard
of a full refresh; the stored EASE model in a feedback refresh, whose exported matrix holds
only the users to recompute; popularity from the whole matrix's item counts), so the rows a
shard writes are the rows a single-process run writes for those users.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recall_pipeline.core.features.rating_matrix import matrix_entries, matrix_from_entries
from recall_pipeline.core.ids import positions, require_same_ids
from recall_pipeline.core.training.ease.model import EaseModel
from recall_pipeline.core.training.ease.store import load_ease, save_ease
from recall_pipeline.core.recall.incremental import RecallPlan
from recall_pipeline.core.recall.recall_candidates import (
    DEFAULT_BLOCK_BUDGET_BYTES, RecallInputs, candidates_table, recall, recall_blocks,
)
from recall_pipeline.core.recall.routes import ModelRoute, RouteSettings
from recall_pipeline.core.shards import ShardStore, shard_of
from recall_pipeline.core.training import text_cf

SHARD_USERS = "shard_users"
EASE_FILE = "ease.npz"
TEXT_CF_FILE = "text_cf.npz"


def all_user_rows(inputs: RecallInputs) -> np.ndarray:
    """The rating-matrix rows to compute: every user (a full refresh)."""
    return np.arange(len(inputs.rm.user_ids))


def export_inputs(store: ShardStore, run_id: str, inputs: RecallInputs, rows: np.ndarray,
                  n_shards: int, ease: EaseModel | None = None) -> pl.DataFrame:
    """Write the shards' inputs, the EASE model they score with (None: each shard fits EASE on
    the exported matrix, which must then be the whole one) and the users to compute (``rows``
    of the rating matrix), each with its shard; returns the users per shard."""
    import faiss

    if ease is not None:
        with tempfile.TemporaryDirectory() as folder:  # the stored model's own file format
            path = Path(folder) / EASE_FILE
            save_ease(ease, path, inputs.item_ids, run_id, 0)
            store.write_bytes(run_id, EASE_FILE, path.read_bytes())
    if inputs.text_cf is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / TEXT_CF_FILE
            text_cf.save(inputs.text_cf, path, inputs.encoder)
            store.write_bytes(run_id, TEXT_CF_FILE, path.read_bytes())
    store.write(run_id, "item_counts", pl.DataFrame({"count": np.asarray(inputs.item_counts, dtype=np.int64)}))

    rm = inputs.rm
    require_same_ids(rm.item_ids, inputs.item_ids, "the item embeddings against the rating matrix's items")
    vectors = pl.Series("embedding", inputs.item_vectors)
    store.write(run_id, "items", pl.DataFrame({"item_id": rm.item_ids}).with_columns(vectors))
    store.write(run_id, "users", pl.DataFrame({"user_id": rm.user_ids}))
    store.write(run_id, "matrix", matrix_entries(rm))
    store.write(run_id, "profiles", inputs.profiles.select("user_id", "embedding"))
    store.write(run_id, "interests", pl.DataFrame({"user_id": inputs.interest_owners})
                .with_columns(pl.Series("embedding", inputs.interests)))
    route = inputs.model_route
    store.write(run_id, "two_tower_users", pl.DataFrame({"row": np.asarray(route.rows, dtype=np.int64)})
                .with_columns(pl.Series("vector", np.asarray(route.user_vectors, dtype=np.float32))))
    store.write_bytes(run_id, "lm.faiss", faiss.serialize_index(inputs.lm_index).tobytes())
    store.write_bytes(run_id, "two_tower.faiss", faiss.serialize_index(route.index).tobytes())
    store.write_bytes(run_id, "meta.json", json.dumps({
        "encoder": inputs.encoder, "lm_index_type": inputs.lm_index_type, "model_key": inputs.model_key,
        "two_tower_trust": inputs.two_tower_trust}).encode())
    users = pl.DataFrame({"user_id": rm.user_ids[rows]})
    users = users.with_columns(shard=pl.Series(shard_of(users["user_id"].to_list(), n_shards)))
    store.write(run_id, SHARD_USERS, users)
    return users.group_by("shard").len("users").sort("shard")


def _matrix(frame: pl.DataFrame, column: str) -> np.ndarray:
    if frame.is_empty():
        return np.zeros((0, 1), dtype=np.float32)
    return np.ascontiguousarray(frame[column].to_numpy(), dtype=np.float32)


def load_inputs(store: ShardStore, run_id: str) -> RecallInputs:
    """The :class:`RecallInputs` the plan step exported (indexes deserialized)."""
    import faiss

    items, users = store.read(run_id, "items"), store.read(run_id, "users")
    rm = matrix_from_entries(store.read(run_id, "matrix"), users["user_id"].to_numpy(), items["item_id"].to_numpy())
    interests, model_users = store.read(run_id, "interests"), store.read(run_id, "two_tower_users")
    meta = exported_meta(store, run_id)

    def index(name: str):
        return faiss.deserialize_index(np.frombuffer(store.read_bytes(run_id, name), dtype=np.uint8))

    return RecallInputs(
        item_ids=rm.item_ids, item_vectors=_matrix(items, "embedding"), encoder=meta["encoder"],
        lm_index=index("lm.faiss"), lm_index_type=meta["lm_index_type"], rm=rm,
        profiles=store.read(run_id, "profiles"), interest_owners=interests["user_id"].to_numpy(),
        interests=_matrix(interests, "embedding"), model_key=meta["model_key"],
        model_route=ModelRoute(index("two_tower.faiss"), model_users["row"].to_numpy(),
                               _matrix(model_users, "vector")),
        item_counts=store.read(run_id, "item_counts")["count"].to_numpy(),
        text_cf=_exported_text_cf(store, run_id, meta["encoder"]), two_tower_trust=meta.get("two_tower_trust", 1.0))


def _exported_text_cf(store: ShardStore, run_id: str, encoder: str):
    """The TextCF model the plan step exported (None: none was fitted yet)."""
    if not store.has_file(run_id, TEXT_CF_FILE):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / TEXT_CF_FILE
        path.write_bytes(store.read_bytes(run_id, TEXT_CF_FILE))
        return text_cf.load(path, encoder)


def exported_ease(store: ShardStore, run_id: str) -> EaseModel | None:
    """The EASE model the plan step exported (None: the shards fit their own)."""
    if not store.has_file(run_id, EASE_FILE):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / EASE_FILE
        path.write_bytes(store.read_bytes(run_id, EASE_FILE))
        return load_ease(path).model


def exported_meta(store: ShardStore, run_id: str) -> dict:
    """The encoder key, LM index type and serving model key the plan step exported."""
    return json.loads(store.read_bytes(run_id, "meta.json"))


@dataclass(frozen=True)
class ShardOutput:
    """What a shard wrote: its users' candidate rows in ``parts`` files (one per block of users,
    at least one)."""

    users: int
    parts: int


def part_name(shard: int, part: int) -> str:
    """The file of one block of a shard's candidate rows."""
    return f"candidates-{shard}-{part}"


def compute_shard(store: ShardStore, run_id: str, shard: int, settings: RouteSettings, k: int,
                  budget_bytes: int = DEFAULT_BLOCK_BUDGET_BYTES) -> ShardOutput:
    """Compute the candidate rows of one shard's users, a block of users at a time
    (:func:`recall_blocks`, within ``budget_bytes``), each block written as its own part, so
    that neither the lists nor the rows of the whole shard are ever held at once (a shard
    without users writes one empty part)."""
    users = store.read(run_id, SHARD_USERS).filter(pl.col("shard") == shard)
    inputs = load_inputs(store, run_id)
    rows = np.sort(positions(inputs.rm.user_ids, users["user_id"].to_numpy(), "shard users"))
    ease = exported_ease(store, run_id) if len(rows) else None
    parts = 0
    for block, merged in recall_blocks(inputs, settings, k, rows, ease, budget_bytes):
        store.write(run_id, part_name(shard, parts), candidates_table(inputs, merged, run_id, block))
        parts += 1
    if not parts:
        store.write(run_id, part_name(shard, 0), candidates_table(inputs, recall(inputs, settings, k, rows), run_id, rows))
    return ShardOutput(len(rows), max(parts, 1))


def candidate_parts(store: ShardStore, run_id: str, parts_per_shard: dict[int, int]) -> Iterator[pl.DataFrame]:
    """Every shard's parts, one at a time (shard by shard, each in (user, rank) order): the rows
    of ``recall.candidates`` this run computed (``parts_per_shard``: what each shard reported;
    empty parts in a feedback refresh whose feedback changed no history)."""
    for shard in sorted(parts_per_shard):
        for part in range(parts_per_shard[shard]):
            yield store.read(run_id, part_name(shard, part))


def export_plan(store: ShardStore, run_id: str, plan: RecallPlan) -> None:
    """What the merge step needs of the run's plan: whose rows to copy from which run."""
    store.write_bytes(run_id, "plan.json", json.dumps({
        "users": None if plan.users is None else [u.item() if hasattr(u, "item") else u for u in plan.users],
        "previous_run": plan.previous_run, "basis": plan.basis, "reason": plan.reason,
        "settings": plan.settings}).encode())


def exported_plan(store: ShardStore, run_id: str) -> RecallPlan:
    """The plan :func:`export_plan` wrote (without the EASE model: the shards have it)."""
    plan = json.loads(store.read_bytes(run_id, "plan.json"))
    users = None if plan["users"] is None else np.asarray(plan["users"])
    return RecallPlan(users, plan["previous_run"], plan["basis"], plan["reason"], settings=plan.get("settings", ""))
