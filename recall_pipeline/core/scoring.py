"""What every scorer shares: its type and the implicit (0/1) view of a rating matrix.

The baselines, the EASE route and the evaluation all rank items by a *scorer*: dense scores for
chosen user rows of a training matrix.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

Scorer = Callable[[np.ndarray], np.ndarray]
"""Scores (len(rows) x n_items) for the given user rows of the training matrix."""


def with_columns(scorer: Scorer, on_columns: Callable[[np.ndarray], Scorer]) -> Scorer:
    """``scorer``, able to score some items only: ``scorer.on_columns(columns)`` is a scorer of
    those columns alone (each user's scores of them, as ``scorer(rows)[:, columns]``). The
    evaluation's cold slice ranks the cold items alone: a tenth of the catalogue, so a scorer
    whose cost is a product with the item vectors scores a tenth instead of everything."""
    scorer.on_columns = on_columns
    return scorer


def on_columns(scorer: Scorer, columns: np.ndarray) -> Scorer:
    """A scorer of ``columns`` alone: the scorer's own (:func:`with_columns`) or its full scores, sliced."""
    narrow = getattr(scorer, "on_columns", None)
    return narrow(columns) if narrow is not None else (lambda rows: scorer(rows)[:, columns])


def within(kept: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(place, inside): which of ``columns`` are among ``kept`` (sorted positions), and where:
    ``kept[place[inside]] == columns[inside]``. How a scorer over some items (EASE's or ItemKNN's
    most-interacted) scores any columns: the others score as it scores items outside them."""
    columns = np.asarray(columns)
    if not len(kept):
        return np.zeros(len(columns), dtype=np.int64), np.zeros(len(columns), dtype=bool)
    place = np.minimum(np.searchsorted(kept, columns), len(kept) - 1)
    return place, kept[place] == columns


def proposing(scorer: Scorer, columns: np.ndarray) -> Scorer:
    """``scorer``, marked as scoring -inf on every item but ``columns`` (sorted positions): EASE
    solved over the most-interacted items proposes those alone. A ranking then ranks those
    columns only (``ranking.top_k_scored``), with the same lists, instead of a catalogue-wide
    row of -inf per user. Give the scorer :func:`with_columns` too, or the full scores are sliced."""
    scorer.proposes = np.asarray(columns)
    return scorer


def binary(train: sp.csr_matrix) -> sp.csr_matrix:
    """The implicit (0/1) version of a rating matrix."""
    x = train.copy().astype(np.float64)
    x.data[:] = 1.0
    x.eliminate_zeros()
    return x


def item_counts(matrix: sp.spmatrix) -> np.ndarray:
    """Interactions per item (column): stored entries, so a 0 rating counts. The one count behind
    popularity, the popularity discount, EASE's item cap and the evaluation's head items."""
    return np.diff(sp.csc_matrix(matrix).indptr)
