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

from recall_pipeline.core.baselines import popularity_scores
from recall_pipeline.core.matrix import RatingMatrix
from recall_pipeline.core.ranking import top_k_dense
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


def evaluate_recall(split: pl.DataFrame, rm: RatingMatrix, final_lists: np.ndarray,
                    user_vectors: np.ndarray, item_vectors: np.ndarray,
                    seed: int = 0) -> list[dict]:
    """Metric rows for the published lists (``final``) and MostPopular, warm and cold slices.

    ``final_lists`` (n_users x K item positions) and ``user_vectors`` (zero rows for users
    without a profile) are aligned with ``rm.user_ids``; ``item_vectors`` with ``rm.item_ids``.
    On the cold slice, ``final`` ranks the cold items by the user's profile against their LM
    embeddings (the only signal a cold item has); MostPopular's cold scores all tie at zero,
    so its cold figures are those of the seeded random order.
    """
    warm = warm_slice(split, rm)
    k_max = max(WARM_RECALL_KS)
    popular = np.broadcast_to(popularity_scores(rm.matrix), (len(warm.rows), rm.matrix.shape[1]))
    pop_lists, _ = top_k_dense(popular, k_max, rm.matrix, warm.rows, seed)
    rows = metric_rows("final", warm, final_lists[warm.rows, :k_max], WARM_RECALL_KS, WARM_NDCG_KS)
    rows += metric_rows("MostPopular", warm, pop_lists, WARM_RECALL_KS, WARM_NDCG_KS)

    cold_items = split.filter(pl.col("part") == "cold_test")["item_id"].unique().to_numpy()
    cold_columns = np.searchsorted(rm.item_ids, np.sort(cold_items))
    cold = cold_slice(split, rm, cold_columns)
    if len(cold.rows):
        k_cold = max(COLD_KS)
        lm_scores = user_vectors[cold.rows] @ item_vectors[cold_columns].T
        lm_lists, _ = top_k_dense(lm_scores, k_cold, seed=seed)
        cold_pop = popularity_scores(rm.matrix)[cold_columns]
        pop_cold, _ = top_k_dense(np.broadcast_to(cold_pop, lm_scores.shape), k_cold, seed=seed)
        rows += metric_rows("final", cold, lm_lists, COLD_KS, COLD_KS)
        rows += metric_rows("MostPopular", cold, pop_cold, COLD_KS, COLD_KS)
    return rows
