"""Merging recall routes: weighted reciprocal-rank fusion, then an MMR re-rank for diversity.

Each route proposes a ranked list per user (item positions, -1 padded). Fusion scores an item
``sum over routes of weight / (c + rank)``, so an item several routes agree on rises, and no
route's raw score scale matters. MMR (Carbonell & Goldstein 1998) then builds the final list
greedily: next = argmax ``lambda * relevance - (1 - lambda) * max similarity to the items
already chosen``, with relevance the fused score scaled to [0, 1] per user and similarity the
cosine of the items' LM embeddings; ``lambda = 1`` keeps the fused order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.recall.ranking import tie_order


@dataclass(frozen=True)
class FusedLists:
    items: np.ndarray          # users x K item positions, -1 padded
    scores: np.ndarray         # users x K fused scores


def rank_matrix(lists: np.ndarray, n_items: int) -> sp.csr_matrix:
    """users x items, value = 1-based rank of the item in the user's list (absent: not stored)."""
    rows, positions = np.nonzero(lists >= 0)
    return sp.csr_matrix((positions + 1.0, (rows, lists[rows, positions])), shape=(len(lists), n_items))


def reciprocal_rank_fusion(route_lists: dict[str, np.ndarray], weights: dict[str, float], k: int,
                           n_items: int, c: float = 60.0, seed: int = 0,
                           item_weights: np.ndarray | None = None) -> FusedLists:
    """Fuse the routes' lists (all users x N, same user rows) into users x k lists; an item's
    fused score is multiplied by ``item_weights[item]`` when given (e.g. a popularity discount)."""
    ranks = {name: rank_matrix(lists, n_items) for name, lists in route_lists.items()}
    fused = sp.csr_matrix((next(iter(route_lists.values())).shape[0], n_items))
    for name, rank in ranks.items():
        contribution = rank.copy()
        contribution.data = weights.get(name, 1.0) / (c + contribution.data)
        fused = fused + contribution
    if item_weights is not None:
        fused = fused @ sp.diags(np.asarray(item_weights, dtype=np.float64))
    fused = fused.tocsr()
    ties = tie_order(n_items, seed)
    items = np.full((fused.shape[0], k), -1, dtype=np.int64)
    scores = np.full((fused.shape[0], k), -np.inf, dtype=np.float32)
    for user in range(fused.shape[0]):
        cols = fused.indices[fused.indptr[user]:fused.indptr[user + 1]]
        vals = fused.data[fused.indptr[user]:fused.indptr[user + 1]]
        order = np.lexsort((ties[cols], -vals))[:k]
        items[user, :len(order)], scores[user, :len(order)] = cols[order], vals[order]
    return FusedLists(items, scores)


def rank_matrix_values(lists: np.ndarray, values: np.ndarray, n_items: int) -> sp.csr_matrix:
    """users x items holding ``values`` at the listed items."""
    rows, columns = np.nonzero(lists >= 0)
    return sp.csr_matrix((values[rows, columns].astype(np.float64), (rows, lists[rows, columns])),
                         shape=(len(lists), n_items))


def gather(matrix: sp.csr_matrix, lists: np.ndarray, dtype=np.int32) -> np.ndarray:
    """``matrix[user, item]`` for every entry of ``lists`` (0 where the list is padded)."""
    rows = np.repeat(np.arange(len(lists)), lists.shape[1])
    values = np.asarray(matrix[rows, np.where(lists >= 0, lists, 0).ravel()]).reshape(lists.shape)
    return np.where(lists >= 0, values, 0).astype(dtype)


def mmr(items: np.ndarray, scores: np.ndarray, item_vectors: np.ndarray, k: int,
        lam: float) -> np.ndarray:
    """Re-rank each user's candidates (-1 padded) to ``k`` items by maximal marginal relevance."""
    out = np.full((len(items), k), -1, dtype=np.int64)
    for user, (row, row_scores) in enumerate(zip(items, scores)):
        valid = row >= 0
        candidates, relevance = row[valid], row_scores[valid].astype(np.float64)
        if not len(candidates):
            continue
        if lam >= 1.0:
            out[user, :min(k, len(candidates))] = candidates[:k]
            continue
        span = relevance.max() - relevance.min()
        relevance = (relevance - relevance.min()) / span if span > 0 else np.ones_like(relevance)
        vectors = item_vectors[candidates]
        similarity = vectors @ vectors.T
        chosen: list[int] = []
        closest = np.full(len(candidates), -np.inf)
        available = np.ones(len(candidates), dtype=bool)
        for _ in range(min(k, len(candidates))):
            penalty = np.where(np.isfinite(closest), closest, 0.0)
            value = np.where(available, lam * relevance - (1.0 - lam) * penalty, -np.inf)
            pick = int(np.argmax(value))  # ties: the earlier (better fused) candidate
            chosen.append(pick)
            available[pick] = False
            closest = np.maximum(closest, similarity[pick])
        out[user, :len(chosen)] = candidates[chosen]
    return out
