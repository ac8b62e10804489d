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
from recall_pipeline.core.recall.ranking import top_k_scored

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


# EASE's exact solutions hold a dense users x items (Woodbury) or items x items (Gram) array;
# above these sizes the item-item model is solved over the most-interacted items only.
EASE_MAX_DENSE_CELLS = 50_000_000
EASE_MAX_ITEMS = 5_000
# ItemKNN's item-item similarity is dense up to this size, then sparse, built in column blocks.
KNN_MAX_DENSE_BYTES = 1 * 2**30
KNN_DENSE_BYTES_PER_CELL = 16  # float32 similarity, its negated copy, the partition's int64 indices
KNN_BLOCK_COLUMNS = 2_048


def ease(train: sp.csr_matrix, lam: float, max_items: int | None = None,
         max_dense_cells: int | None = None) -> Scorer:
    """EASE (Steck 2019): B = I - P diag(1/diag(P)), P = (X'X + lam I)^-1; scores X B.

    Exact while it fits: with fewer users than items and users x items within
    ``max_dense_cells``, the item-item inverse comes from the Woodbury identity (nothing of size
    items x items is inverted or stored); with at most ``max_items`` items, from the Gram matrix.
    Above both, the model is solved over the ``max_items`` most-interacted items (the others
    score -inf: this route does not propose them), so memory is bounded by ``max_items``^2.
    """
    return fit_ease(train, lam, max_items, max_dense_cells)[0]


@dataclass(frozen=True)
class EaseModel:
    """A fitted EASE model in the form its solve produced, able to score any binary history
    over the same items: what a feedback refresh reuses (the model of the last full refresh)
    for the users whose history changed, instead of solving again.

    Gram solve: ``weights`` is B (items x items). Capped solve: ``weights`` is B over the item
    positions ``columns``. Woodbury solve: B is never formed; ``fit`` (the binary training
    matrix X), ``kinv_x`` (K^-1 X, users x items) and ``diag_p`` (diag of P) give, for a
    history h, h P = (h - (h X') K^-1 X) / lam and scores h - h P / diag(P).

    The EASE route's model adds a windowed term (``core.training.windowed_ease``): the Gram and
    capped solves fold it into ``weights``; the Woodbury solve adds ``sequence_scale`` x
    (h P) ``sequence``. ``window`` and ``window_weight`` record what it was fitted with (0: none).
    """

    lam: float
    n_items: int
    weights: np.ndarray | None = None
    columns: np.ndarray | None = None
    fit: sp.csr_matrix | None = None
    kinv_x: np.ndarray | None = None
    diag_p: np.ndarray | None = None
    sequence: sp.csr_matrix | None = None
    sequence_scale: float = 0.0
    window: int = 0
    window_weight: float = 0.0

    def scores(self, histories: sp.csr_matrix, binarize: bool = True) -> np.ndarray:
        """Dense scores (rows of ``histories`` x items); ratings are binarised unless
        ``binarize`` is False: then the histories' values weigh each interaction (e.g. by
        recency), every solve's formula being linear in the history."""
        x = sp.csr_matrix(histories)
        x = binary(x) if binarize else x.astype(np.float64)
        if self.kinv_x is not None:
            dense = x.toarray()
            xp = self._history_p(x, dense)
            out = dense - xp / self.diag_p
            if self.sequence is not None:
                out += self.sequence_scale * np.asarray((self.sequence.T @ xp.T).T)
            return out
        if self.columns is None:
            return np.asarray(x @ self.weights)
        out = np.full((x.shape[0], self.n_items), -np.inf)
        out[:, self.columns] = x[:, self.columns] @ self.weights
        return out

    def sequence_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """The Woodbury form's windowed term alone, unscaled: (h P) ``sequence``."""
        xp = self._history_p(sp.csr_matrix(histories, dtype=np.float64))
        return np.asarray((self.sequence.T @ xp.T).T)

    def _history_p(self, x: sp.csr_matrix, dense: np.ndarray | None = None) -> np.ndarray:
        """h P for the Woodbury form: (h - (h X') K^-1 X) / lam (``dense``: ``x`` as an array, if at hand)."""
        dense = x.toarray() if dense is None else dense
        return (dense - np.asarray((x @ self.fit.T) @ self.kinv_x)) / self.lam

    def scorer(self, train: sp.csr_matrix, binarize: bool = True) -> Scorer:
        """A scorer over the rows of ``train`` (any matrix over the same items; ``binarize`` as
        in :meth:`scores`)."""
        if train.shape[1] != self.n_items:
            raise ValueError(f"the EASE model covers {self.n_items} items, the matrix {train.shape[1]}")
        return lambda rows: self.scores(train[rows], binarize)


def fit_ease(train: sp.csr_matrix, lam: float, max_items: int | None = None,
             max_dense_cells: int | None = None) -> tuple[Scorer, EaseModel]:
    """:func:`ease`'s scorer over the rows of ``train`` and the fitted model behind it."""
    max_items = EASE_MAX_ITEMS if max_items is None else max_items
    max_dense_cells = EASE_MAX_DENSE_CELLS if max_dense_cells is None else max_dense_cells
    x = binary(train)
    n_users, n_items = x.shape
    if n_users < n_items and n_users * n_items <= max_dense_cells:
        return _ease_woodbury(x, lam)
    if n_items <= max_items:
        b, diag_p = _ease_weights(x, lam)
        return (lambda rows: np.asarray(x[rows] @ b)), EaseModel(lam, n_items, weights=b, diag_p=diag_p)
    counts = np.diff(x.tocsc().indptr)
    keep = np.sort(np.argsort(-counts, kind="stable")[:max_items])
    kept = x[:, keep].tocsr()
    b, diag_p = _ease_weights(kept, lam)

    def scores(rows: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), n_items), -np.inf)
        out[:, keep] = kept[rows] @ b
        return out

    return scores, EaseModel(lam, n_items, weights=b, columns=keep, diag_p=diag_p)


def _ease_weights(x: sp.csr_matrix, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, diag of P) from the items x items Gram matrix of ``x``, in place: two items x items
    arrays at most."""
    import scipy.linalg

    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += lam
    b = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    del gram
    diag_p = np.diag(b).copy()
    b /= -diag_p
    np.fill_diagonal(b, 0.0)
    return b, diag_p


def _ease_woodbury(x: sp.csr_matrix, lam: float) -> tuple[Scorer, EaseModel]:
    """EASE through P = (I - X' K^-1 X) / lam with K = lam I + X X' (users x users)."""
    n_users = x.shape[0]
    dense = x.toarray()
    k_inv = np.linalg.inv(dense @ dense.T + lam * np.eye(n_users))
    k_inv_x = k_inv @ dense                                   # users x items
    diag_p = (1.0 - (dense * k_inv_x).sum(axis=0)) / lam      # diag of P
    xp_all = (dense - (dense @ dense.T) @ k_inv_x) / lam      # X P, users x items

    # x_u B = x_u - (x_u P) / diag(P); B's diagonal, 1 - P_jj / P_jj, is zero by construction
    return ((lambda rows: dense[rows] - xp_all[rows] / diag_p),
            EaseModel(lam, x.shape[1], fit=x, kinv_x=k_inv_x, diag_p=diag_p))


def item_knn(train: sp.csr_matrix, neighbours: int | float, max_dense_bytes: int | None = None) -> Scorer:
    """Item-based kNN: cosine over the binary matrix's columns, top ``neighbours`` per item.

    Only items with training interactions can be neighbours or be scored above zero, so the
    similarity is computed over those columns alone (float32). While the active items'
    similarity fits in ``max_dense_bytes`` it is computed whole; above, it stays sparse (only
    co-occurring items have one) and each item keeps its top ``neighbours`` (ties by item
    order), so memory grows with the co-occurrences, never with items x items.
    """
    x = binary(train)
    active = np.flatnonzero(np.diff(x.tocsc().indptr))
    xa = x[:, active].astype(np.float32)
    keep = min(int(neighbours), len(active) - 1)
    limit = KNN_MAX_DENSE_BYTES if max_dense_bytes is None else max_dense_bytes
    dense = len(active) ** 2 * KNN_DENSE_BYTES_PER_CELL <= limit
    similarity = _dense_cosine_top(xa, keep) if dense else _sparse_cosine_top(xa, keep)
    n_items = x.shape[1]

    def scores(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), n_items))
        product = xa[rows] @ similarity
        out[:, active] = product if dense else product.toarray()
        return out

    return scores


def _dense_cosine_top(xa: sp.csr_matrix, keep: int) -> np.ndarray:
    """Item-item cosine (dense), each column keeping its top ``keep`` entries."""
    norms = np.sqrt(np.asarray(xa.sum(axis=0)).ravel())
    sim = (xa.T @ xa).toarray()
    sim /= norms[:, None]
    sim /= norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if 0 < keep < len(sim) - 1:
        # the neighbours of item j are the top entries of column j
        drop = np.argpartition(-sim, keep, axis=0)[keep:]
        np.put_along_axis(sim, drop, 0.0, axis=0)
    return sim


def _sparse_cosine_top(xa: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """The same as a sparse matrix, built a block of columns at a time; ties at a column's
    cut are broken by item order."""
    xa = xa.tocsc()
    norms = np.sqrt(np.asarray(xa.sum(axis=0)).ravel())
    n = xa.shape[1]
    step = max(1, KNN_BLOCK_COLUMNS)
    blocks = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = (xa.T @ xa[:, start:stop]).tocsc()
        block.setdiag(0.0, k=-start)
        block.eliminate_zeros()
        block.data /= norms[block.indices] * np.repeat(norms[start:stop], np.diff(block.indptr))
        blocks.append(_top_per_column(block, keep))
    return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), dtype=np.float32)


def _top_per_column(block: sp.csc_matrix, keep: int) -> sp.csc_matrix:
    """Each column's ``keep`` largest entries (ties: lower row first)."""
    counts = np.diff(block.indptr)
    if keep <= 0 or counts.max(initial=0) <= keep:
        return block
    column = np.repeat(np.arange(block.shape[1]), counts)
    order = np.lexsort((block.indices, -block.data, column))
    rank = np.arange(len(order)) - np.repeat(block.indptr[:-1], counts)
    chosen = order[rank < keep]
    return sp.csc_matrix((block.data[chosen], (block.indices[chosen], column[chosen])), shape=block.shape)


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
