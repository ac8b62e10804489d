"""Baselines computed on the same split as the pipeline: MostPopular, ItemKNN and EASE.

Each scorer maps a binary training matrix X (users x items, CSR) to dense scores for chosen
user rows. Hyper-parameters are tuned on the protocol's validation cut of training only
(:func:`tune`), never on the test split. The collaborative route of the recall stage may reuse
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts
from recall_pipeline.core.serving.ranking import top_k_dense

Scorer = Callable[[np.ndarray], np.ndarray]
"""Scores (len(rows) x n_items) for the given user rows of the training matrix."""


def binary(train: sp.csr_matrix) -> sp.csr_matrix:
    """The implicit (0/1) version of a rating matrix."""
    x = train.copy().astype(np.float64)
    x.data[:] = 1.0
    x.eliminate_zeros()
    return x


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Training interaction count per item (MostPopular's score)."""
    return np.diff(train.tocsc().indptr).astype(np.float64)  # stored entries: a 0 rating counts


def most_popular(train: sp.csr_matrix) -> Scorer:
    counts = popularity_scores(train)
    return lambda rows: np.broadcast_to(counts, (len(rows), len(counts)))


def ease(train: sp.csr_matrix, lam: float) -> Scorer:
    """EASE (Steck 2019): B = I - P diag(1/diag(P)), P = (X'X + lam I)^-1; scores X B.

    With fewer users than items the item-item inverse comes from the Woodbury identity,
    P = (I - X' K^-1 X) / lam with K = lam I + X X' (users x users), so nothing of size
    items x items is inverted or even stored: exact EASE in a fraction of the time.
    """
    x = binary(train)
    n_users, n_items = x.shape
    if n_users >= n_items:
        gram = (x.T @ x).toarray() + lam * np.eye(n_items)
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        return lambda rows: np.asarray(x[rows] @ b)
    dense = x.toarray()
    k_inv = np.linalg.inv(dense @ dense.T + lam * np.eye(n_users))
    k_inv_x = k_inv @ dense                                   # users x items
    diag_p = (1.0 - (dense * k_inv_x).sum(axis=0)) / lam      # diag of P
    xp_all = (dense - (dense @ dense.T) @ k_inv_x) / lam      # X P, users x items

    # x_u B = x_u - (x_u P) / diag(P); B's diagonal, 1 - P_jj / P_jj, is zero by construction
    return lambda rows: dense[rows] - xp_all[rows] / diag_p


def item_knn(train: sp.csr_matrix, neighbours: int | float) -> Scorer:
    """Item-based kNN: cosine over the binary matrix's columns, top ``neighbours`` per item.

    Only items with training interactions can be neighbours or be scored above zero, so the
    similarity is computed over those columns alone (float32) and scattered back.
    """
    x = binary(train)
    active = np.flatnonzero(np.diff(x.tocsc().indptr))
    xa = x[:, active].astype(np.float32)
    norms = np.sqrt(np.asarray(xa.sum(axis=0)).ravel())
    sim = (xa.T @ xa).toarray()
    sim /= norms[:, None]
    sim /= norms[None, :]
    np.fill_diagonal(sim, 0.0)
    keep = min(int(neighbours), len(active) - 1)
    if 0 < keep < len(active) - 1:
        # the neighbours of item j are the top entries of column j
        drop = np.argpartition(-sim, keep, axis=0)[keep:]
        np.put_along_axis(sim, drop, 0.0, axis=0)
    n_items = x.shape[1]

    def scores(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), n_items))
        out[:, active] = xa[rows] @ sim
        return out

    return scores


@dataclass(frozen=True)
class Tuned:
    """A tuned hyper-parameter and the validation Recall@50 of every value tried."""

    value: float
    validation_recall: dict[float, float]


def validation_recall(scorer: Scorer, fit: sp.csr_matrix, holdout: sp.csr_matrix,
                      k: int = 50, seed: int = 0) -> float:
    """Mean Recall@k on the held-out relevant items, ranking all items minus the fit items."""
    rows = np.flatnonzero(relevant_counts(holdout))
    if not len(rows):
        return 0.0
    lists, _ = top_k_dense(scorer(rows), k, fit, rows, seed)
    relevant = holdout[rows]
    return float(recall_at_k(hit_matrix(lists, relevant), relevant_counts(relevant), k).mean())


def tune(make_scorer: Callable[[sp.csr_matrix, float], Scorer], grid: Sequence[float],
         fit: sp.csr_matrix, holdout: sp.csr_matrix, seed: int = 0) -> Tuned:
    """The grid value with the best validation Recall@50 (the first of equals)."""
    results = {value: validation_recall(make_scorer(fit, value), fit, holdout, seed=seed)
               for value in grid}
    best = max(results, key=lambda value: (results[value], -list(grid).index(value)))
    return Tuned(best, results)
