"""Recall candidate lists: the top K items per user, training items excluded.

Users with a profile are served from the item index by inner product with their profile;
users without training history get the most popular items (a seeded random order breaks ties).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recall_pipeline.core.baselines import popularity_scores
from recall_pipeline.core.ids import positions, require_same_ids
from recall_pipeline.core.matrix import RatingMatrix
from recall_pipeline.core.ranking import search_top_k, top_k_dense


def recall_lists(index, index_item_ids: np.ndarray, rm: RatingMatrix, profile_user_ids: np.ndarray,
                 profiles: np.ndarray, k: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists for every user of the rating matrix: (items, scores, route), rows as rm.user_ids.

    ``index_item_ids`` are the ids the index's positions stand for; they must be the rating
    matrix's catalogue, or positions would be read as the wrong items. ``items`` holds item
    positions padded with -1; ``route`` names how each user was served.
    """
    require_same_ids(rm.item_ids, index_item_ids, "the FAISS index's items against the rating matrix's")
    n_users = len(rm.user_ids)
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    route = np.full(n_users, "popularity", dtype=object)
    rows = positions(rm.user_ids, profile_user_ids, "profile users among the rating matrix's users")
    if len(rows):
        items[rows], scores[rows] = search_top_k(index, profiles, rm.matrix, rows, k)
        route[rows] = "lm_profile"
    cold_start = np.flatnonzero(route == "popularity")
    if len(cold_start):
        popular = popularity_scores(rm.matrix)[None, :]
        top, top_scores = top_k_dense(popular, k, seed=seed)
        items[cold_start], scores[cold_start] = top[0], top_scores[0]
    return items, scores, route


def candidates_frame(rm: RatingMatrix, items: np.ndarray, scores: np.ndarray,
                     route: np.ndarray) -> pl.DataFrame:
    """Long format: one row per (user, rank) with item id, score and route; padding dropped."""
    n_users, k = items.shape
    valid = items >= 0
    user_rows, ranks = np.nonzero(valid)
    return pl.DataFrame({
        "user_id": rm.user_ids[user_rows],
        "rank": (ranks + 1).astype(np.int32),
        "item_id": rm.item_ids[items[valid]],
        "score": scores[valid].astype(np.float32),
        "route": route[user_rows].astype(str),
    })


def profile_scorer(user_vectors: np.ndarray, item_vectors: np.ndarray):
    """The LM profile route as a scorer: inner products of user profiles and item embeddings
    (``user_vectors`` aligned with the rating matrix's users, zero rows for users without one)."""
    return lambda rows: user_vectors[rows] @ item_vectors.T


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
