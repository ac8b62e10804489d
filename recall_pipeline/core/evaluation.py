"""The evaluation protocol's slices and metric rows (``shared/EVALUATION.md``).

The warm slice: users with at least one relevant warm test item, each ranking the catalogue
minus their own training items. The cold slice: users with at least one relevant interaction on
a cold item, ranking the cold items alone. Metric rows carry the names that SQL queries rely
on: slices ``warm``/``cold``, metrics ``recall``/``ndcg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.matrix import RatingMatrix
from recall_pipeline.core.metrics import hit_matrix, ndcg_at_k, recall_at_k, relevant_counts

WARM_RECALL_KS = (20, 50, 100)
WARM_NDCG_KS = (10,)
COLD_KS = (20,)


@dataclass(frozen=True)
class Slice:
    """Users of a slice (rows of the rating matrix) and their relevant items (CSR, same rows)."""

    name: str
    rows: np.ndarray
    relevant: sp.csr_matrix


def _relevance(split: pl.DataFrame, part: str, rm: RatingMatrix) -> sp.csr_matrix:
    rel = split.filter((pl.col("part") == part) & pl.col("is_relevant"))
    rows = np.searchsorted(rm.user_ids, rel["user_id"].to_numpy())
    cols = np.searchsorted(rm.item_ids, rel["item_id"].to_numpy())
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                           shape=rm.matrix.shape)
    matrix.data[:] = 1.0  # a repeated (user, item) counts once
    return matrix


def warm_slice(split: pl.DataFrame, rm: RatingMatrix) -> Slice:
    relevant = _relevance(split, "warm_test", rm)
    rows = np.flatnonzero(relevant_counts(relevant))
    return Slice("warm", rows, relevant[rows])


def cold_slice(split: pl.DataFrame, rm: RatingMatrix, cold_columns: np.ndarray) -> Slice:
    """Relevant columns are re-indexed to positions within ``cold_columns``."""
    relevant = _relevance(split, "cold_test", rm)[:, cold_columns].tocsr()
    rows = np.flatnonzero(relevant_counts(relevant))
    return Slice("cold", rows, relevant[rows])


def metric_rows(model: str, slice_: Slice, lists: np.ndarray, recall_ks: tuple[int, ...],
                ndcg_ks: tuple[int, ...]) -> list[dict]:
    """Mean Recall@K and NDCG@K over the slice's users for lists aligned with ``slice_.rows``."""
    hits = hit_matrix(lists, slice_.relevant)
    n_rel = relevant_counts(slice_.relevant)
    rows = [{"model": model, "slice": slice_.name, "metric": "recall", "k": k,
             "value": float(recall_at_k(hits, n_rel, k).mean())} for k in recall_ks]
    rows += [{"model": model, "slice": slice_.name, "metric": "ndcg", "k": k,
              "value": float(ndcg_at_k(hits, n_rel, k).mean())} for k in ndcg_ks]
    return rows
