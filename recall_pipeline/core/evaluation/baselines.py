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
from recall_pipeline.core.scoring import Scorer, binary, item_counts, with_columns, within  # noqa: F401 (the baselines' vocabulary)
# EASE is a baseline and a production route: its model lives with the training code
from recall_pipeline.core.training.ease.model import EaseModel, ease, ease_maker, fit_ease  # noqa: F401
from recall_pipeline.core.recall.ranking import top_k_scored

def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Training interaction count per item (MostPopular's score)."""
    return item_counts(train).astype(np.float64)


def most_popular(train: sp.csr_matrix) -> Scorer:
    return _counts_scorer(popularity_scores(train))


def _counts_scorer(counts: np.ndarray) -> Scorer:
    """Every user scores each item by its count; any columns alone, too (the cold slice)."""
    return with_columns(lambda rows: np.broadcast_to(counts, (len(rows), len(counts))),
                        lambda columns: _counts_scorer(counts[columns]))


# ItemKNN's item-item similarity is dense up to this size, then sparse, built in column blocks
# of at most KNN_BLOCK_COLUMNS columns and KNN_BLOCK_CELLS cells (a block's co-occurrences can
# reach every item: at 715,121 items 2,048 popular columns held up to 1.5G entries).
KNN_MAX_DENSE_BYTES = 1 * 2**30
KNN_DENSE_BYTES_PER_CELL = 16  # float32 similarity, its transposed copy, the partition's int64 indices
KNN_BLOCK_COLUMNS = 2_048
KNN_BLOCK_CELLS = 20_000_000
# Above this many items with interactions, ItemKNN is computed over the most-interacted ones (as
# EASE is over its EASE_MAX_ITEMS): the others neither score nor vote. The M catalogue (100,000
# items) is within it; at L it keeps 100,000 of 715,121.
KNN_MAX_ITEMS = 100_000


class ItemKNN:
    """Item-based kNN over one training matrix: cosine over the binary matrix's columns, each
    item's top ``neighbours`` kept.

    Only items with training interactions can be neighbours or be scored above zero, so the
    similarity is computed over those columns alone (float32). While the active items'
    similarity fits in ``max_dense_bytes`` it is computed whole, once, and each
    :meth:`scorer` prunes it (tuning tries five neighbour counts on one matrix); above, it stays
    sparse (only co-occurring items have one) and each item keeps its top ``neighbours`` (ties
    by item order), so memory grows with the co-occurrences, never with items x items; with
    ``most_neighbours`` it is ranked once to that many and each smaller count takes a prefix.
    Either way the pruned similarity is sparse, and a user's scores are their history times it.
    Above ``max_items`` items with interactions, only the most-interacted take part (ties by
    item order), so the similarity's size and build time are bounded at any catalogue size.
    """

    def __init__(self, train: sp.csr_matrix, max_dense_bytes: int | None = None,
                 most_neighbours: int | None = None, max_items: int | None = None):
        x = binary(train)
        self.n_items = x.shape[1]
        counts = item_counts(x)
        self.active = np.flatnonzero(counts)
        max_items = KNN_MAX_ITEMS if max_items is None else max_items
        if len(self.active) > max_items:
            self.active = np.sort(np.argsort(-counts, kind="stable")[:max_items])
        self.xa = x[:, self.active].astype(np.float32)
        limit = KNN_MAX_DENSE_BYTES if max_dense_bytes is None else max_dense_bytes
        dense = len(self.active) ** 2 * KNN_DENSE_BYTES_PER_CELL <= limit
        self._cosine = _dense_cosine(self.xa) if dense else None
        self.most_neighbours = most_neighbours
        self._ranked = None

    def scorer(self, neighbours: int | float) -> Scorer:
        keep = min(int(neighbours), len(self.active) - 1)
        if self._cosine is not None:
            similarity = _top_per_dense_column(self._cosine, keep)
        else:
            similarity = _first_per_column(self._ranked_up_to(keep), keep)
        xa, active, n_items = self.xa, self.active, self.n_items

        def scores(rows: np.ndarray) -> np.ndarray:
            out = np.zeros((len(rows), n_items))
            out[:, active] = (xa[rows] @ similarity).toarray()
            return out

        def columns_of(columns: np.ndarray) -> Scorer:
            place, inside = within(active, columns)
            voted = similarity[:, place[inside]]

            def some(rows: np.ndarray) -> np.ndarray:
                out = np.zeros((len(rows), len(inside)))
                if inside.any():
                    out[:, inside] = (xa[rows] @ voted).toarray()
                return out

            return some

        return with_columns(scores, columns_of)

    def _ranked_up_to(self, keep: int) -> sp.csc_matrix:
        """The sparse similarity ranked to ``most_neighbours`` (once) when ``keep`` is within
        it, else to ``keep`` alone."""
        most = self.most_neighbours
        if most is None or keep > most:
            return _ranked_sparse_cosine(self.xa, keep)
        if self._ranked is None:
            self._ranked = _ranked_sparse_cosine(self.xa, min(most, len(self.active) - 1))
        return self._ranked


def item_knn(train: sp.csr_matrix, neighbours: int | float, max_dense_bytes: int | None = None) -> Scorer:
    """ItemKNN's scorer with ``neighbours`` neighbours per item (see :class:`ItemKNN`)."""
    return ItemKNN(train, max_dense_bytes).scorer(neighbours)


def item_knn_maker(most_neighbours: int) -> Callable[[sp.csr_matrix, float], Scorer]:
    """``item_knn`` for :func:`tune` over neighbour counts up to ``most_neighbours``, computing
    the similarity once per training matrix: the grid's values all prune the same one."""
    last: dict = {}

    def make(train: sp.csr_matrix, neighbours: float) -> Scorer:
        if last.get("train") is not train:
            last.clear()
            last.update(train=train, knn=ItemKNN(train, most_neighbours=most_neighbours))
        return last["knn"].scorer(neighbours)

    return make


def _dense_cosine(xa: sp.csr_matrix) -> np.ndarray:
    """Item-item cosine (dense), zero on the diagonal."""
    norms = np.sqrt(np.asarray(xa.sum(axis=0)).ravel())
    sim = (xa.T @ xa).toarray()
    sim /= norms[:, None]
    sim /= norms[None, :]
    np.fill_diagonal(sim, 0.0)
    return sim


def _top_per_dense_column(sim: np.ndarray, keep: int) -> sp.csr_matrix:
    """``sim`` with each column's top ``keep`` entries only, as a sparse matrix. The neighbours
    of item j are the top entries of column j; they are selected on a contiguous copy of the
    columns (the same selection, ties included, as a partition down each column, and faster)."""
    n = len(sim)
    if not 0 < keep < n - 1:
        return sp.csr_matrix(sim)
    top = np.argpartition(np.ascontiguousarray(-sim.T), keep, axis=1)[:, :keep]
    rows, columns = top.ravel(), np.repeat(np.arange(n), keep)
    pruned = sp.csr_matrix((sim[rows, columns], (rows, columns)), shape=sim.shape)
    pruned.eliminate_zeros()
    return pruned


def _ranked_sparse_cosine(xa: sp.csr_matrix, keep: int) -> sp.csc_matrix:
    """Each column's top ``keep`` cosines (ties: lower row first), built a block of columns at
    a time, stored in rank order within each column: the top ``k`` for any ``k`` up to
    ``keep`` are then each column's first ``k`` entries (:func:`_first_per_column`)."""
    xa = xa.tocsc()
    norms = np.sqrt(np.asarray(xa.sum(axis=0)).ravel())
    n = xa.shape[1]
    step = max(1, min(KNN_BLOCK_COLUMNS, KNN_BLOCK_CELLS // max(n, 1)))
    data, indices, counts = [], [], []
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = (xa.T @ xa[:, start:stop]).tocsc()
        block.setdiag(0.0, k=-start)
        block.eliminate_zeros()
        block.data /= norms[block.indices] * np.repeat(norms[start:stop], np.diff(block.indptr))
        column_counts = np.diff(block.indptr)
        column = np.repeat(np.arange(block.shape[1]), column_counts)
        order = np.lexsort((block.indices, -block.data, column))
        rank = np.arange(len(order)) - np.repeat(block.indptr[:-1], column_counts)
        chosen = order[rank < keep] if keep > 0 else order
        data.append(block.data[chosen])
        indices.append(block.indices[chosen])
        counts.append(np.minimum(column_counts, keep) if keep > 0 else column_counts)
    if not counts:
        return sp.csc_matrix((n, n), dtype=np.float32)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    # rank order, not row order, within each column: scipy must not sort or merge these
    return sp.csc_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n, n))


def _first_per_column(ranked: sp.csc_matrix, keep: int) -> sp.csr_matrix:
    """The first ``keep`` entries of each column of a :func:`_ranked_sparse_cosine` matrix."""
    counts = np.diff(ranked.indptr)
    take = np.minimum(counts, keep) if keep > 0 else counts
    ends = np.cumsum(take)
    positions = np.repeat(ranked.indptr[:-1], take) + np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - take, take)
    first = sp.csc_matrix((ranked.data[positions], ranked.indices[positions], np.concatenate([[0], ends])),
                          shape=ranked.shape)
    return first.tocsr()


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
    lists, _ = top_k_scored(scorer, rows, k, fit.shape[1], fit, seed)
    relevant = holdout[rows]
    return float(recall_at_k(hit_matrix(lists, relevant), relevant_counts(relevant), k).mean())


def tune(make_scorer: Callable[[sp.csr_matrix, float], Scorer], grid: Sequence[float],
         fit: sp.csr_matrix, holdout: sp.csr_matrix, seed: int = 0) -> Tuned:
    """The grid value with the best validation Recall@50 (the first of equals)."""
    results = {value: validation_recall(make_scorer(fit, value), fit, holdout, seed=seed)
               for value in grid}
    best = max(results, key=lambda value: (results[value], -list(grid).index(value)))
    return Tuned(best, results)
