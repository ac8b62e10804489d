"""Recall lists in and out of their stored form."""

from __future__ import annotations

import numpy as np
import polars as pl

from recall_pipeline.core.ids import positions
from recall_pipeline.core.features.rating_matrix import RatingMatrix


def lists_from_frame(rm: RatingMatrix, candidates: pl.DataFrame) -> np.ndarray:
    """The inverse of :func:`candidates_frame`: a users x K array of item positions (-1 empty)."""
    lists = np.full((len(rm.user_ids), int(candidates["rank"].max())), -1, dtype=np.int64)
    rows = positions(rm.user_ids, candidates["user_id"].to_numpy(), "candidate users")
    lists[rows, candidates["rank"].to_numpy() - 1] = positions(
        rm.item_ids, candidates["item_id"].to_numpy(), "candidate items")
    return lists


def vectors_by_user(rm: RatingMatrix, user_ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Vectors aligned with the rating matrix's users; zero rows for users without one."""
    out = np.zeros((len(rm.user_ids), vectors.shape[1]), dtype=np.float32)
    out[positions(rm.user_ids, user_ids, "profile users")] = vectors
    return out


def route_shares(candidates: pl.DataFrame) -> dict[str, float]:
    """The share of the published candidates each recall route served."""
    counts = candidates.group_by("route").len().sort("route")
    return dict(counts.with_columns(pl.col("len") / candidates.height).iter_rows())
