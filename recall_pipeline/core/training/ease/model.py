"""EASE (Steck 2019) solved in closed form, and the fitted model that scores any history.

The solve is chosen by size so that memory stays bounded: Woodbury (users x users) with fewer
users than items, the Gram matrix (items x items) up to ``EASE_MAX_ITEMS`` items, and above
both the most-interacted ``EASE_MAX_ITEMS`` items only. :class:`EaseSolver` keeps what does not
depend on the regularisation, so that a grid of values costs one inverse each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.scoring import Scorer, binary, item_counts, proposing, with_columns, within

# EASE's exact solutions hold a dense users x items (Woodbury) or items x items (Gram) array;
# above these sizes the item-item model is solved over the most-interacted items only.
EASE_MAX_DENSE_CELLS = 50_000_000
EASE_MAX_ITEMS = 5_000


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

    The EASE route's model adds a windowed term (``core.training.ease.windowed``): the Gram and
    capped solves fold it into ``weights`` (what is served and stored), or keep ``sequence``
    apart as a dense array to score a few users (the validation cut: a product per user instead
    of one over the whole item axis); the Woodbury solve adds ``sequence_scale`` x (h P)
    ``sequence``. ``window`` and ``window_weight`` record what it was fitted with (0: none).
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

    @property
    def form(self) -> str:
        """Which solve produced it: ``woodbury``, ``gram`` or ``capped`` (over ``columns``)."""
        if self.kinv_x is not None:
            return "woodbury"
        return "gram" if self.columns is None else "capped"

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
            return self.column_scores(x)
        out = np.full((x.shape[0], self.n_items), -np.inf)
        out[:, self.columns] = self.column_scores(x[:, self.columns])
        return out

    def column_scores(self, x: sp.csr_matrix) -> np.ndarray:
        """Gram or capped form: the scores over the solve's items of histories ``x`` given over
        those items, x B, plus the windowed term where it is kept apart: s (x P) C_w, with
        x P = (x - x B) diag(P) (B's diagonal is zero)."""
        out = np.asarray(x @ self.weights)
        if self.sequence is not None:
            xp = (x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)) - out
            xp *= self.diag_p
            out += self.sequence_scale * (xp @ self.sequence)  # C_w is symmetric
        return out

    def sequence_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """The Woodbury form's windowed term alone, unscaled: (h P) ``sequence``."""
        xp = self._history_p(sp.csr_matrix(histories, dtype=np.float64))
        return np.asarray((self.sequence.T @ xp.T).T)

    def _history_p(self, x: sp.csr_matrix, dense: np.ndarray | None = None) -> np.ndarray:
        """h P for the Woodbury form: (h - (h X') K^-1 X) / lam (``dense``: ``x`` as an array, if at hand)."""
        dense = x.toarray() if dense is None else dense
        # h X' is users x fit users and mostly filled: as an array its product with K^-1 X is one
        # BLAS call, ~20x faster than scipy's single-threaded sparse-times-dense on the bundled data
        return (dense - (x @ self.fit.T).toarray() @ self.kinv_x) / self.lam

    def scorer(self, train: sp.csr_matrix, binarize: bool = True) -> Scorer:
        """A scorer over the rows of ``train`` (any matrix over the same items; ``binarize`` as
        in :meth:`scores`)."""
        if train.shape[1] != self.n_items:
            raise ValueError(f"the EASE model covers {self.n_items} items, the matrix {train.shape[1]}")
        if self.columns is None:
            return lambda rows: self.scores(train[rows], binarize)

        def kept_scores(rows: np.ndarray) -> np.ndarray:
            x = sp.csr_matrix(train[rows][:, self.columns])
            return self.column_scores(binary(x) if binarize else x.astype(np.float64))

        return _capped(kept_scores, self.columns, self.n_items)


def fit_ease(train: sp.csr_matrix, lam: float, max_items: int | None = None,
             max_dense_cells: int | None = None) -> tuple[Scorer, EaseModel]:
    """:func:`ease`'s scorer over the rows of ``train`` and the fitted model behind it."""
    return EaseSolver(train, max_items, max_dense_cells).fit(lam)


def ease_maker(max_items: int | None = None,
               max_dense_cells: int | None = None) -> Callable[[sp.csr_matrix, float], Scorer]:
    """:func:`ease` for a grid of regularisations: the solver of the last matrix seen is kept,
    so its Gram matrix (or X X') is computed once for the whole grid, not once per value."""
    kept: list[tuple[sp.csr_matrix, EaseSolver]] = []

    def make(train: sp.csr_matrix, lam: float) -> Scorer:
        if not kept or kept[0][0] is not train:
            kept[:] = [(train, EaseSolver(train, max_items, max_dense_cells))]
        return kept[0][1].fit(lam)[0]

    return make


class EaseSolver:
    """EASE's solve for one training matrix, at any regularisation. What does not depend on the
    regularisation (the binary matrix, its Gram matrix, or X X' for the Woodbury form) is
    computed once: a grid of regularisations (the EASE baseline's tuning, the EASE route's
    variants) then costs one inverse per value. The solve is chosen as :func:`ease` says."""

    def __init__(self, train: sp.csr_matrix, max_items: int | None = None, max_dense_cells: int | None = None):
        max_items = EASE_MAX_ITEMS if max_items is None else max_items
        max_dense_cells = EASE_MAX_DENSE_CELLS if max_dense_cells is None else max_dense_cells
        x = binary(train)
        n_users, self.n_items = x.shape
        self.columns: np.ndarray | None = None
        if n_users < self.n_items and n_users * self.n_items <= max_dense_cells:
            self.form, self.x = "woodbury", x
            self.dense = x.toarray()
            self.outer = self.dense @ self.dense.T                # users x users
            return
        self.form = "gram"
        if self.n_items > max_items:
            self.form = "capped"
            counts = item_counts(x)
            self.columns = np.sort(np.argsort(-counts, kind="stable")[:max_items])
            x = x[:, self.columns].tocsr()
        self.x = x
        self.gram = (x.T @ x).toarray()                           # items x items (or max_items^2)

    def fit(self, lam: float) -> tuple[Scorer, EaseModel]:
        """(the scorer over the rows of the training matrix, the fitted model) at ``lam``."""
        if self.form == "woodbury":
            return self._woodbury(lam)
        b, diag_p = _ease_weights(self.gram, lam)
        x, keep, n_items = self.x, self.columns, self.n_items
        model = EaseModel(lam, n_items, weights=b, columns=keep, diag_p=diag_p)

        def scores(rows: np.ndarray) -> np.ndarray:  # over the kept items when capped
            return np.asarray(x[rows] @ b)

        return (scores if keep is None else _capped(scores, keep, n_items)), model

    def _woodbury(self, lam: float) -> tuple[Scorer, EaseModel]:
        """EASE through P = (I - X' K^-1 X) / lam with K = lam I + X X' (users x users)."""
        dense = self.dense
        k_inv = np.linalg.inv(self.outer + lam * np.eye(len(self.outer)))
        k_inv_x = k_inv @ dense                                   # users x items
        diag_p = (1.0 - (dense * k_inv_x).sum(axis=0)) / lam      # diag of P
        xp_all = (dense - self.outer @ k_inv_x) / lam             # X P, users x items

        # x_u B = x_u - (x_u P) / diag(P); B's diagonal, 1 - P_jj / P_jj, is zero by construction
        return ((lambda rows: dense[rows] - xp_all[rows] / diag_p),
                EaseModel(lam, self.n_items, fit=self.x, kinv_x=k_inv_x, diag_p=diag_p))


def _capped(kept_scores: Scorer, keep: np.ndarray, n_items: int) -> Scorer:
    """A capped solve's scorer over all ``n_items`` (every item but ``keep`` at -inf), built
    from ``kept_scores`` (the users' scores over ``keep``), marked as proposing ``keep`` alone
    and able to score any columns (``scoring.with_columns``): rankings then rank the kept items
    only."""

    def scorer(rows: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), n_items), -np.inf)
        out[:, keep] = kept_scores(rows)
        return out

    def columns_of(columns: np.ndarray) -> Scorer:
        columns = np.asarray(columns)
        if np.array_equal(columns, keep):
            return kept_scores
        place, inside = within(keep, columns)

        def scores(rows: np.ndarray) -> np.ndarray:
            out = np.full((len(rows), len(columns)), -np.inf)
            if inside.any():
                out[:, inside] = kept_scores(rows)[:, place[inside]]
            return out

        return scores

    return proposing(with_columns(scorer, columns_of), keep)


def _ease_weights(gram: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, diag of P) from the items x items Gram matrix (left as it is): one more items x
    items array, which becomes B."""
    p = gram.copy()
    p[np.diag_indices_from(p)] += lam
    _spd_inverse(p)
    # every score is a sparse history times B, which reads B's rows: row (C) order, as
    # _spd_inverse leaves it (column order made each row strided, 33x slower at M: 0.17 s
    # against 0.005 s for 41 users over 5,000 items)
    diag_p = np.diag(p).copy()
    p /= -diag_p
    np.fill_diagonal(p, 0.0)
    return p, diag_p


def _spd_inverse(a: np.ndarray, block: int = 512) -> None:
    """Invert the symmetric positive definite ``a`` (C order, float64) in place, through its
    Cholesky factor: a third of the flops of an LU inverse (at 5,000 items on 2 cores 2.3 s
    against 3.2 s). LAPACK fills one triangle; the other is mirrored a block of rows at a time,
    so no index array of the matrix's size is built."""
    from scipy.linalg import lapack

    n = a.shape[0]
    view = a.T  # column order, the same matrix: LAPACK works on it in place
    factor, info = lapack.dpotrf(view, lower=True, overwrite_a=True, clean=False)
    if info == 0:
        factor, info = lapack.dpotri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: the regularised Gram matrix is not positive definite (LAPACK info {info})")
    if not np.shares_memory(factor, a):  # LAPACK worked on a copy: bring its triangle back
        view[...] = factor
    # the view's lower triangle is a's upper one: copy it below the diagonal
    for start in range(0, n, block):
        stop = min(start + block, n)
        a[start:stop, :start] = a[:start, start:stop].T
        square = a[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        square[lower] = square.T[lower]
