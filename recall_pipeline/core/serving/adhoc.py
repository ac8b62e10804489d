"""Recall for an ad-hoc history (a new user given as a list of items), outside any run.

The routes that need no stored user state serve it: the two-tower model (its user tower reads
the list as the history, most recent last) and the LM history profile (the mean LM embedding of
the items), fused, discounted by popularity and re-ranked like the nightly lists; the given items are never recalled."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.training import two_tower
from recall_pipeline.core.serving.ranking import search_top_k
from recall_pipeline.core.serving.routes import MergedLists, RouteSettings, merge_routes


def history_recall(history: np.ndarray, model: two_tower.TwoTower, model_index, lm_index,
                   lm_vectors: np.ndarray, k: int, settings: RouteSettings = RouteSettings(),
                   train_counts: np.ndarray | None = None) -> MergedLists:
    """Top ``k`` for one history of catalogue positions (in time order); ``train_counts`` per
    item apply the popularity discount like the nightly lists."""
    n_items, length = len(lm_vectors), model.architecture.history_length
    history = np.asarray(history, dtype=np.int64)
    seen = sp.csr_matrix((np.ones(len(history)), (np.zeros(len(history), int), history)), shape=(1, n_items))
    window = np.full((1, length), -1, dtype=np.int64)
    recent = history[-length:]
    window[0, length - len(recent):] = recent
    user = two_tower.user_vectors(model, window, np.full(window.shape, np.nan, np.float32))
    profile = lm_vectors[history].mean(axis=0, keepdims=True)
    profile /= max(float(np.linalg.norm(profile)), 1e-12)
    row, depth = np.zeros(1, dtype=np.int64), min(settings.depth, n_items)
    lists = {"two_tower": search_top_k(model_index, user, seen, row, depth, seed=settings.seed)[0],
             "lm_profile": search_top_k(lm_index, profile.astype(np.float32), seen, row, depth,
                                        seed=settings.seed)[0]}
    return merge_routes(lists, lm_vectors, k, settings, train_counts)
