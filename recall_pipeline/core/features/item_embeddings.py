"""Item embeddings keyed by (item id, text hash, model), re-encoding only what changed.

A refresh encodes the items whose text (or model) is new and reuses every stored vector whose
key still matches, so a nightly run over a large, slowly changing catalogue costs only the
changes. Changing the model changes every key, so everything is re-encoded.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

KEY = ("item_id", "text_hash", "model")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class EmbeddingPlan:
    """What a refresh must do: every wanted key, the stored rows it reuses, the texts to encode."""

    wanted: pl.DataFrame   # item_id, text_hash, model
    reused: pl.DataFrame   # item_id, text_hash, model, embedding
    todo: pl.DataFrame     # item_id, text_hash, model, item_text


def plan_refresh(items: pl.DataFrame, model: str, previous: pl.DataFrame | None) -> EmbeddingPlan:
    """Split ``items`` (item_id, item_text) into the stored vectors whose key (item id, text
    hash, ``model``) still matches and the texts to encode; ``previous`` is the stored table
    (item_id, text_hash, model, embedding) or None."""
    wanted = items.select(
        "item_id",
        pl.col("item_text").map_elements(text_hash, return_dtype=pl.String).alias("text_hash"),
        pl.lit(model).alias("model"),
        "item_text",
    )
    reused = reused_rows(wanted.select(KEY), previous)
    todo = wanted.join(reused.select(KEY), on=list(KEY), how="anti")
    return EmbeddingPlan(wanted.select(KEY), reused, todo)


def reused_rows(wanted: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """The stored rows (item_id, text_hash, model, embedding) whose key is still wanted."""
    if previous is None or not previous.height:
        return wanted.select(KEY).head(0).with_columns(embedding=pl.lit(None))
    return wanted.select(KEY).join(previous.select(*KEY, "embedding"), on=list(KEY), how="inner")


def encode_texts(todo: pl.DataFrame, encoder, progress: bool = False) -> tuple[pl.DataFrame, float]:
    """(item_id, text_hash, model, embedding) of the texts in ``todo``, and the encoding seconds;
    nothing to encode loads no model (an unchanged catalogue's shards cost next to nothing)."""
    if todo.is_empty():
        return todo.select(KEY).with_columns(embedding=pl.lit(None)), 0.0
    start = time.perf_counter()
    vectors = encoder.encode(todo["item_text"].to_list(), progress=progress)
    seconds = time.perf_counter() - start
    return todo.select(KEY).with_columns(pl.Series("embedding", vectors)), seconds


def assemble(encoded: list[pl.DataFrame], reused: pl.DataFrame) -> pl.DataFrame:
    """The embedding table: encoded and reused rows, sorted by item id."""
    parts = [part for part in encoded if part.height]
    dtype = parts[0].schema["embedding"] if parts else (reused.schema["embedding"] if reused.height else None)
    if reused.height:
        parts.append(reused.select(*KEY, "embedding").cast({"embedding": dtype}))
    if not parts:
        raise ValueError("no item embeddings: nothing encoded and nothing reused")
    return pl.concat(parts).sort("item_id")


def as_matrix(table: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(item ids sorted ascending, float32 vectors aligned with them)."""
    table = table.sort("item_id")
    return table["item_id"].to_numpy(), np.ascontiguousarray(table["embedding"].to_numpy(),
                                                            dtype=np.float32)
