"""Recall for an ad-hoc history (a new user given as a list of items), outside any run.

Every route that needs no stored user state serves it, with the route settings of the published
run and the serving version's trust: the two-tower model (its user tower reads the list as the
history, most recent last), the stored EASE model of the last full refresh (the history weighted
by recency, as the nightly route weighs a stored history), the stored TextCF model (items
without training interactions) and the LM history profile (the mean LM embedding of the items),
fused, discounted by popularity and re-ranked like the nightly lists; the given items are never
recalled. What the nightly lists have beyond this: the LM interest route, which needs the
user's interest vectors (where the run chose the interest view to rank cold items, the history
profile ranks them here)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.features.rating_matrix import recency_weight
from recall_pipeline.core.features.user_profiles import build_user_profiles

from recall_pipeline.core.training.ease.model import EaseModel
from recall_pipeline.core.recall.ranking import search_top_k, top_k_dense
from recall_pipeline.core.recall.routes import (
    LMView, MergedLists, RouteSettings, TextCFRoute, merge_routes, text_cf_lists,
)
from recall_pipeline.core.training import two_tower
from recall_pipeline.core.training.route_trust import served


def history_recall(history: np.ndarray, model: two_tower.TwoTower, model_index, lm_index,
                   lm_vectors: np.ndarray, k: int, settings: RouteSettings = RouteSettings(),
                   train_counts: np.ndarray | None = None, ease: EaseModel | None = None,
                   text_cf: TextCFRoute | None = None, trust: float = 1.0) -> MergedLists:
    """Top ``k`` for one history of catalogue positions (in time order); ``train_counts`` per
    item apply the popularity discount like the nightly lists; ``ease`` / ``text_cf``: the
    stored models of those routes (None: the route is left out); ``trust``: the serving
    version's factor on the two-tower route's weight."""
    settings = served(settings, trust)
    n_items, length = len(lm_vectors), model.architecture.history_length
    history = np.asarray(history, dtype=np.int64)
    seen = sp.csr_matrix((np.ones(len(history)), (np.zeros(len(history), int), history)), shape=(1, n_items))
    seen.sum_duplicates()
    seen.data[:] = 1.0
    window = np.full((1, length), -1, dtype=np.int64)
    recent = history[-length:]
    window[0, length - len(recent):] = recent
    user = two_tower.user_vectors(model, window, np.full(window.shape, np.nan, np.float32))
    profile = history_profile(history, lm_vectors)
    row, depth = np.zeros(1, dtype=np.int64), min(settings.depth, n_items)
    lists = {"two_tower": search_top_k(model_index, user, seen, row, depth, seed=settings.seed)[0],
             "lm_profile": search_top_k(lm_index, profile, seen, row, depth,
                                        seed=settings.seed)[0]}
    if ease is not None and settings.computes("ease"):
        lists["ease"] = ease_list(ease, history, n_items, seen, depth, settings)
    if text_cf is not None and settings.computes("text_cf"):
        # no interest text is encoded outside a run: the history profile stands for both LM views
        views = {name: LMView(row, profile) for name in ("lm_profile", "lm_interest")}
        lists["text_cf"] = text_cf_lists(text_cf, seen, row, depth, settings.seed, views)
    return merge_routes(lists, lm_vectors, k, settings, train_counts)


def history_profile(history: np.ndarray, lm_vectors: np.ndarray) -> np.ndarray:
    """The LM history profile (1 x d) the nightly profiles are built with
    (``user_profiles.build_user_profiles``), for a history that has neither ratings nor times:
    every interaction weighs alike, a repeated item once per interaction."""
    frame = pl.DataFrame({"user_id": np.zeros(len(history), dtype=np.int64), "item_id": history,
                          "rating": pl.Series([None] * len(history), dtype=pl.Float64),
                          "timestamp": pl.Series([datetime(1970, 1, 1)] * len(history), dtype=pl.Datetime("us"))})
    return build_user_profiles(frame, np.arange(len(lm_vectors)), lm_vectors).vectors


def recency_history(history: np.ndarray, n_items: int, tau: float, floor: float) -> sp.csr_matrix:
    """The history as one row weighted like ``RatingMatrix.recency_weighted``: each distinct item
    at its latest place, places counted over the distinct items from the end (the latest 1),
    weighing ``floor + (1 - floor) * exp(-(place - 1) / tau)``."""
    items, first_from_end = np.unique(history[::-1], return_index=True)
    places = np.argsort(np.argsort(first_from_end)) + 1  # 1 for the latest distinct item
    weights = recency_weight(places, tau, floor)
    return sp.csr_matrix((weights, (np.zeros(len(items), dtype=np.int64), items)), shape=(1, n_items))


def ease_list(ease: EaseModel, history: np.ndarray, n_items: int, seen: sp.csr_matrix, depth: int,
              settings: RouteSettings) -> np.ndarray:
    """The EASE route's top ``depth`` for the history (items a capped model does not cover score
    -inf and are left out)."""
    scores = ease.scores(recency_history(history, n_items, settings.ease_recency_tau, settings.ease_recency_floor),
                         binarize=False)
    return top_k_dense(scores, depth, seen, seed=settings.seed)[0]
