"""Recall candidate lists: the top K items per user, training items excluded.

Users with a profile are served from the item index by inner product with their profile;
users without training history get the most popular items (a seeded random order breaks ties).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recall_pipeline.core.baselines import popularity_scores
from recall_pipeline.core.matrix import RatingMatrix
from recall_pipeline.core.ranking import search_top_k, top_k_dense


def recall_lists(index, rm: RatingMatrix, profile_user_ids: np.ndarray, profiles: np.ndarray,
                 k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists for every user of the rating matrix: (items, scores, route), rows as rm.user_ids.

    ``items`` holds item positions padded with -1; ``route`` names how each user was served.
    """
    n_users = len(rm.user_ids)
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    route = np.full(n_users, "popularity", dtype=object)
    rows = np.searchsorted(rm.user_ids, profile_user_ids)
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
