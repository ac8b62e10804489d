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
class EmbeddingRefresh:
    """The embedding table after a refresh, and what it cost."""

    table: pl.DataFrame
    encoded: int
    reused: int
    encode_seconds: float


def refresh_item_embeddings(items: pl.DataFrame, encoder, previous: pl.DataFrame | None,
                            progress: bool = False) -> EmbeddingRefresh:
    """Embeddings for ``items`` (item_id, item_text), sorted by item id.

    ``previous`` is the stored table (item_id, text_hash, model, embedding) or None.
    """
    model = encoder.identity.key()
    wanted = items.select(
        "item_id",
        pl.col("item_text").map_elements(text_hash, return_dtype=pl.String).alias("text_hash"),
        pl.lit(model).alias("model"),
        "item_text",
    )
    reused = pl.DataFrame()
    if previous is not None and previous.height:
        reused = wanted.join(previous.select(*KEY, "embedding"), on=list(KEY), how="inner")
    todo = wanted.join(reused.select(KEY), on=list(KEY), how="anti") if reused.height else wanted
    start = time.perf_counter()
    vectors = encoder.encode(todo["item_text"].to_list(), progress=progress)
    seconds = time.perf_counter() - start
    fresh = todo.with_columns(pl.Series("embedding", vectors))
    parts = [fresh.select(*KEY, "embedding")]
    if reused.height:
        parts.append(reused.select(*KEY, "embedding").cast({"embedding": fresh.schema["embedding"]}))
    table = pl.concat(parts).sort("item_id")
    return EmbeddingRefresh(table, todo.height, reused.height, seconds)


def as_matrix(table: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(item ids sorted ascending, float32 vectors aligned with them)."""
    table = table.sort("item_id")
    return table["item_id"].to_numpy(), np.ascontiguousarray(table["embedding"].to_numpy(),
                                                            dtype=np.float32)
