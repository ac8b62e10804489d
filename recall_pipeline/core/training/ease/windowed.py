"""The EASE route's model: EASE plus what users interact with *near* each other in time.

EASE (Steck 2019) reconstructs each item of a history from all the others, every pair alike,
however far apart in the user's history the two interactions were. What a recall list must
find is the user's *next* interactions (the warm test is each user's latest 20%), and items
taken up close together say more about that than items years apart. After TALE (WSDM'25, a
closed-form item-to-item model whose targets are weighed by their time distance), the route adds
to EASE's ``B`` the least-squares map from a history to the items interacted with *within
``window`` places* of each of its items:

    B_w = P C_w,  P = (X'X + lam I)^-1 (EASE's own inverse),
    C_w[i, j] = number of users whose histories hold i and j at most ``window`` places apart (i != j)

and scores ``x B + s x P C_w``, ``s`` setting the second term's spread to ``weight`` times the
first's on a seeded sample of users (the two terms' scales differ by orders of magnitude). Both
terms are linear in the history, so the route's recency-weighted histories apply unchanged.

Its memory is bounded as EASE's is: ``C_w`` has at most 2 x ``window`` entries per training
interaction (and at most ``max_items``^2 when EASE is capped) and is built in ``window``
vectorised passes; the Gram and capped solves fold the term into their ``B`` (one items x items
array kept, as before), and the Woodbury solve keeps ``C_w`` sparse and applies it to ``x P``,
which that solve computes anyway. At L's shape the fit takes 3.4x EASE's time (12 s against
3.5 s, ``bench/perf/windowed_ease_scale.py``). ``window`` and ``weight`` are chosen on the
validation cut (``bench/tuning/tune_fusion.py``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.training.ease.model import EaseModel, fit_ease
from recall_pipeline.core.features.rating_matrix import RatingMatrix, aligned_recency

SCALE_SAMPLE_USERS = 512


def window_pairs(rm: RatingMatrix, window: int, columns: np.ndarray | None = None) -> sp.csr_matrix:
    """``C_w`` over ``rm``'s items, or over the item positions ``columns`` only (a capped EASE's;
    pairs with any other item are left out), symmetric with a zero diagonal: for each pair of
    interactions at most ``window`` places apart in a user's history (by :attr:`rm.recency`),
    one count for (i, j) and one for (j, i). Built one gap at a time, so memory holds the
    interactions' positions, one gap's pairs and the sum (at most ``len(columns)``^2 entries)."""
    keep = np.arange(rm.matrix.shape[1]) if columns is None else np.asarray(columns)
    size = len(keep)
    pairs = sp.csr_matrix((size, size))
    if rm.recency is None or window < 1 or rm.matrix.nnz == 0:
        return pairs
    place = np.full(rm.matrix.shape[1], -1, dtype=np.int64)
    place[keep] = np.arange(size)
    users = np.repeat(np.arange(rm.matrix.shape[0]), np.diff(rm.matrix.indptr))
    order = np.lexsort((-aligned_recency(rm), users))  # each user's history, oldest first
    users, items = users[order], place[rm.matrix.indices[order]]
    for gap in range(1, window + 1):
        same_user = users[:-gap] == users[gap:]
        if not same_user.any():
            break
        both = same_user & (items[:-gap] >= 0) & (items[gap:] >= 0)
        step = sp.csr_matrix((np.ones(int(both.sum())), (items[:-gap][both], items[gap:][both])), shape=(size, size))
        pairs = pairs + step + step.T
    return pairs.tocsr()


def fit(rm: RatingMatrix, lam: float, max_items: int | None, window: int, weight: float,
        seed: int = 0, base: EaseModel | None = None, pairs: sp.csr_matrix | np.ndarray | None = None,
        fold: bool = True) -> EaseModel:
    """EASE on ``rm`` (:func:`.model.fit_ease`: the Gram, capped or Woodbury solve) with the
    windowed term of weight ``weight`` (0 or ``window`` 0: EASE alone). A matrix without
    :attr:`rm.recency` (stored before it existed) has no order to take windows in: EASE alone,
    recorded as window 0, so that a stored model never claims a term it does not have.
    ``base``: plain EASE already fitted on ``rm`` at ``lam`` and ``max_items`` (e.g. while
    tuning the regularisation), extended instead of solved again; ``pairs``: :func:`window_pairs`
    of ``rm`` at ``window`` over the model's columns, already built (for several regularisations;
    dense or sparse). ``fold`` False (Gram and capped solves): the term is kept apart as a dense
    ``sequence`` and applied per scored history (:meth:`.model.EaseModel.column_scores`) instead
    of folded into ``B``: for scoring a sample of users (the validation cut), where one
    items x items product costs more than all their scores; such a model is not stored."""
    if base is not None and (base.lam != lam or base.window or base.n_items != rm.matrix.shape[1]):
        raise ValueError(f"the base model (lambda {base.lam:g}, window {base.window}) is not plain EASE at {lam:g}")
    model = fit_ease(rm.matrix, lam, max_items)[1] if base is None else base
    if weight <= 0 or window < 1 or rm.recency is None:
        return model
    pairs = window_pairs(rm, window, model.columns) if pairs is None else pairs
    sample = _sample_histories(rm, seed)
    if model.kinv_x is not None:  # Woodbury: C_w stays sparse, applied to x P at scoring time
        unit = replace(model, sequence=pairs, sequence_scale=1.0)
        scale = _scale(weight, model.scores(sample), unit.sequence_scores(sample))
        return replace(unit, sequence_scale=scale, window=window, window_weight=weight)
    x = sample if model.columns is None else sample[:, model.columns]
    if not fold:  # kept apart, applied to each history's x P
        unit = replace(model, sequence=pairs.toarray() if sp.issparse(pairs) else pairs, sequence_scale=1.0)
        scale = _scale(weight, np.asarray(x @ model.weights), unit.column_scores(x) - np.asarray(x @ model.weights))
        return replace(unit, sequence_scale=scale, window=window, window_weight=weight)
    # Gram or capped: x P = (x - x B) * diag(P), so P C_w = (I - B) diag(P) C_w, folded into B.
    # Transiently B, (I - B) diag(P), C_w dense and their product: four max_items^2 arrays (a
    # dense product: C_w is nearly dense among the most-interacted items, and BLAS is ~30x
    # faster than a sparse product there); what is kept is one, as for EASE alone.
    p_c = -model.weights
    p_c[np.diag_indices_from(p_c)] += 1.0
    p_c *= model.diag_p[None, :]
    p_c = p_c @ (pairs.toarray() if sp.issparse(pairs) else pairs)
    p_c *= _scale(weight, np.asarray(x @ model.weights), np.asarray(x @ p_c))
    p_c += model.weights
    return replace(model, weights=p_c, window=window, window_weight=weight)


def _scale(weight: float, base: np.ndarray, term: np.ndarray) -> float:
    """The factor that gives the term's scores ``weight`` times the base's spread (0: a term
    with no spread, e.g. no pairs at all, adds nothing)."""
    spread = _spread(term)
    return weight * _spread(base) / spread if spread > 0 else 0.0


def _sample_histories(rm: RatingMatrix, seed: int) -> sp.csr_matrix:
    """Binary histories of a seeded sample of users with training interactions: where the two
    terms' spreads are compared."""
    with_history = np.flatnonzero(np.diff(rm.matrix.indptr) > 0)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(with_history)[:SCALE_SAMPLE_USERS])
    sample = sp.csr_matrix(rm.matrix[rows], dtype=np.float64, copy=True)
    sample.data[:] = 1.0
    return sample


def _spread(scores: np.ndarray) -> float:
    """Standard deviation of the finite scores (a capped model's other items score -inf)."""
    finite = scores[np.isfinite(scores)]
    return float(finite.std()) if finite.size else 0.0
