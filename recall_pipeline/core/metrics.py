"""Ranking metrics of ``shared/EVALUATION.md`` over padded top-K lists, vectorised.

``lists`` is an (n_users x K) array of item positions padded with -1; ``relevant`` is a CSR
(n_users x n_items) matrix whose non-zeros are each user's relevant items. Every user passed in
must have at least one relevant item (the slices are defined that way).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hit_matrix(lists: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean (n_users x K): is the item at each rank relevant to its user?"""
    rows = np.repeat(np.arange(lists.shape[0]), lists.shape[1])
    safe = np.where(lists < 0, 0, lists).ravel()
    hits = np.asarray(relevant[rows, safe]).reshape(lists.shape) != 0
    return hits & (lists >= 0)


def relevant_counts(relevant: sp.csr_matrix) -> np.ndarray:
    return np.diff(relevant.indptr)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: |relevant in top k| / min(k, |relevant|)."""
    return hits[:, :k].sum(axis=1) / np.minimum(k, n_relevant)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: binary-gain DCG@k over the ideal DCG of min(k, |relevant|) hits."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(k, n_relevant) - 1]
    return dcg / ideal
