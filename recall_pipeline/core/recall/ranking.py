"""Top-K lists: from FAISS searches or dense scores, with each user's training items excluded.

Lists are arrays of item positions (columns of the rating matrix), padded with -1 when a user
has fewer than K eligible items. Equal scores are ordered by a fixed, seeded random rank of the
items (:func:`tie_order`), in dense rankings and FAISS results alike, as the evaluation protocol
requires (ranking ties by id would favour old movies). A training item counts as seen whenever
the matrix stores it, whatever its rating (a rating of 0 included).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.scoring import on_columns


def tie_order(n_items: int, seed: int = 0) -> np.ndarray:
    """A fixed random rank per item, used as the tie-breaker."""
    return np.random.default_rng(seed).permutation(n_items)


def seen(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """1 wherever the matrix stores an entry (an explicit 0 rating is still a seen item)."""
    out = matrix.tocsr(copy=True).astype(np.float32)
    out.data[:] = 1.0
    return out


def is_excluded(exclude: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Boolean array shaped like ``items``: True where ``exclude`` stores ``[rows[i], items[i, j]]``."""
    safe = np.where(items < 0, 0, items)
    flat_rows = np.repeat(np.arange(len(rows)), items.shape[1])  # the batch's own rows, not the whole matrix
    hit = np.asarray(seen(exclude[np.asarray(rows)])[flat_rows, safe.ravel()]).reshape(items.shape) != 0
    return hit & (items >= 0)


def order_ties(items: np.ndarray, scores: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each row by (score descending, tie rank ``ranks[item]``, the catalogue's
    :func:`tie_order`): FAISS returns equal scores in an order of its own, which must not
    decide who makes the list."""
    tie_keys = np.where(items >= 0, ranks[np.where(items >= 0, items, 0)], np.iinfo(np.int64).max)
    order = np.lexsort((tie_keys, -np.nan_to_num(scores, nan=-np.inf)), axis=1)
    return np.take_along_axis(items, order, axis=1), np.take_along_axis(scores, order, axis=1)


def first_k_allowed(items: np.ndarray, scores: np.ndarray, excluded: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``k`` entries not excluded (order kept), padded with -1 / -inf."""
    dropped = excluded | (items < 0)
    order = np.argsort(dropped, axis=1, kind="stable")[:, :k]
    keep_items = np.take_along_axis(items, order, axis=1)
    keep_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    pad = np.take_along_axis(dropped, order, axis=1)
    keep_items[pad] = -1
    keep_scores[pad] = -np.inf
    if keep_items.shape[1] < k:
        extra = k - keep_items.shape[1]
        keep_items = np.pad(keep_items, ((0, 0), (0, extra)), constant_values=-1)
        keep_scores = np.pad(keep_scores, ((0, 0), (0, extra)), constant_values=-np.inf)
    return keep_items, keep_scores


def top_k_dense(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None,
                rows: np.ndarray | None = None, seed: int = 0,
                ties: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` columns per row of a dense score matrix, ties by a seeded random order.

    Only the entries above each row's k-th score, and the entries equal to it with the best tie
    ranks, can make the list: both are found by partial sorts, in time linear in the row, and
    only those candidates are sorted by (score, tie rank). The result is the full sort's.
    ``ties``: the columns' tie ranks (default ``tie_order(columns, seed)``); a ranking over some
    of the catalogue's items passes the catalogue's ranks of those items, so that it orders
    them as the ranking over the whole catalogue would."""
    scores = _without_excluded(scores, exclude, rows)
    return _ranked(scores, k, tie_order(scores.shape[1], seed) if ties is None else np.asarray(ties))


def _without_excluded(scores: np.ndarray, exclude: sp.csr_matrix | None, rows: np.ndarray | None) -> np.ndarray:
    """A float64 copy of ``scores`` with the entries ``exclude`` stores in ``rows`` at -inf."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        rows = np.arange(len(scores)) if rows is None else rows
        sub = exclude[rows].tocoo()  # stored entries, explicit zeros included
        scores[sub.row, sub.col] = -np.inf
    return scores


def _ranked(scores: np.ndarray, k: int, ties: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_dense` on scores already copied, exclusions applied (read, never written)."""
    n_items = scores.shape[1]
    if 0 < k < n_items and len(scores):
        candidates, values, keys = _candidates(scores, k, ties)
    else:
        candidates = np.broadcast_to(np.arange(n_items), scores.shape)
        values, keys = scores, ties[candidates]
    order = np.lexsort((keys, -values), axis=1)[:, :k]
    top_scores = np.take_along_axis(values, order, axis=1)
    items = np.where(np.isneginf(top_scores), -1, np.take_along_axis(candidates, order, axis=1))
    if items.shape[1] < k:
        items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, k - top_scores.shape[1])), constant_values=-np.inf)
    return items, top_scores.astype(np.float32)


def _candidates(scores: np.ndarray, k: int, ties: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(columns, their scores, their tie keys), 2k per row, holding every entry above the row's
    k-th score and the k entries equal to it with the best tie ranks; filler entries score
    -inf and tie last."""
    last = int(ties.max(initial=-1)) + 1  # ties after every real tie rank
    first = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, first[:, k - 1:k], axis=1).min(axis=1, keepdims=True)
    above = np.take_along_axis(scores, first, axis=1) > kth
    tied, at_cut = _at_cut(scores, kth, k, ties, last)
    candidates = np.concatenate([first, tied], axis=1)
    real = np.concatenate([above, at_cut], axis=1)
    values = np.where(real, np.take_along_axis(scores, candidates, axis=1), -np.inf)
    keys = np.where(real, ties[candidates], last)
    return candidates, values, keys


def _at_cut(scores: np.ndarray, kth: np.ndarray, k: int, ties: np.ndarray,
            last: int) -> tuple[np.ndarray, np.ndarray]:
    """(k columns per row, which of them are real): the entries equal to the row's k-th score
    with the best tie ranks. Most rows of continuous scores hold the k-th score once: that
    entry alone, found in one pass; only rows holding it more than once pay for a partial
    sort of their tie ranks (a third of the ranking's time when every row did)."""
    equal = scores == kth
    several = np.flatnonzero(equal.sum(axis=1) > 1)
    tied = np.repeat(equal.argmax(axis=1)[:, None], k, axis=1)
    at_cut = np.zeros(tied.shape, dtype=bool)
    at_cut[:, 0] = True  # the k-th score itself
    if len(several):
        keys = np.where(equal[several], ties[None, :], last)
        tied[several] = np.argpartition(keys, k - 1, axis=1)[:, :k]
        at_cut[several] = np.take_along_axis(equal[several], tied[several], axis=1)
    return tied, at_cut


# Bytes one score cell costs while a block is ranked, measured (test_memory_ceiling.py): the
# scorer's output and its temporaries, the float64 copy, the negated copy and the partial
# sorts' int64 indices.
BYTES_PER_CELL = 64
DEFAULT_SCORE_BUDGET_BYTES = 256 * 2**20


def block_rows(n_items: int, budget_bytes: int = DEFAULT_SCORE_BUDGET_BYTES) -> int:
    """How many users' scores over ``n_items`` items fit in ``budget_bytes`` (at least one)."""
    return max(1, budget_bytes // (max(n_items, 1) * BYTES_PER_CELL))


def ranking_threads() -> int:
    """Threads that rank a block's rows at once: the cores this process may use, or
    ``OMP_NUM_THREADS`` where set (as BLAS and torch take it; the test suite sets 1), at most 8.
    The partial sorts and the element-wise passes of :func:`top_k_dense` release the GIL, and
    between two blocks' BLAS calls they would otherwise run on one core."""
    cores = len(os.sched_getaffinity(0))
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, min(8, cores, int(asked) if asked.isdigit() else cores))


def top_k_scored(scorer: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, k: int, n_items: int,
                 exclude: sp.csr_matrix | None = None, seed: int = 0,
                 budget_bytes: int = DEFAULT_SCORE_BUDGET_BYTES,
                 ties: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` items of ``scorer`` (user rows -> their dense scores over ``n_items`` items)
    for ``rows``, a block of users at a time: memory stays within ``budget_bytes`` however
    many users and items there are, and no users x items array is ever built. Each block's rows
    are ranked in :func:`ranking_threads` slices at once (each row's list is its own: the lists
    are the one-thread ones). ``exclude``: a matrix whose stored entries in the users' rows are
    left out (training items); ``ties``: as in :func:`top_k_dense`. A scorer that proposes
    some columns only (``scoring.proposing``) is ranked over those: an item scoring -inf never
    makes a list, so the lists are the same."""
    rows = np.asarray(rows)
    ties = tie_order(n_items, seed) if ties is None else np.asarray(ties)
    proposed = getattr(scorer, "proposes", None)
    if proposed is not None and len(proposed) < n_items:
        top, top_scores = top_k_scored(on_columns(scorer, proposed), rows, k, len(proposed),
                                       exclude[:, proposed].tocsr() if exclude is not None else None, seed,
                                       budget_bytes, ties[proposed])
        return np.where(top >= 0, proposed[np.where(top >= 0, top, 0)], -1), top_scores
    step = block_rows(n_items, budget_bytes)
    items = np.full((len(rows), k), -1, dtype=np.int64)
    scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    threads = ranking_threads()
    # the calling thread ranks the first slice of each block and the pool the others (none with
    # one thread): with one thread nothing is allocated in a second malloc arena
    with ThreadPoolExecutor(max(1, threads - 1)) as pool:
        for start in range(0, len(rows), step):
            block = rows[start:start + step]
            # the scorer's own array is freed once copied: one block of scores alive, as with one thread
            block_scores = _without_excluded(scorer(block), exclude, block if exclude is not None else None)
            bounds = np.linspace(0, len(block), min(threads, len(block)) + 1).astype(int)

            def rank(part: tuple[int, int]) -> None:
                lo, hi = part
                items[start + lo:start + hi], scores[start + lo:start + hi] = _ranked(block_scores[lo:hi], k, ties)

            parts = list(zip(bounds[:-1], bounds[1:]))
            others = [pool.submit(rank, part) for part in parts[1:]]
            rank(parts[0])
            for done in others:
                done.result()
    return items, scores


def search_depths(counts: np.ndarray, k: int, n_total: int) -> np.ndarray:
    """Each query's first search depth: ``k`` plus its user's excluded items, rounded up to a
    power of two (at most ``n_total``). A user's depth is their own, not their batch's: one
    long history (1,600 items at L) no longer makes 1,023 other users search, tie-order and
    filter 1,800 results each (1.3x faster on a Zipf mix of histories, same lists)."""
    need = k + np.asarray(counts, dtype=np.int64)
    return np.minimum(n_total, 2 ** np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64))


def search_top_k(index, queries: np.ndarray, exclude: sp.csr_matrix, rows: np.ndarray, k: int,
                 batch_size: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` index items per query with the query user's excluded items removed.

    Each query searches its own depth (:func:`search_depths`): ``k`` plus its user's exclusion
    count, so that after removing the user's training items at least ``k`` remain whenever the
    catalogue has them; queries of the same depth are searched together, in batches; a batch
    searches deeper while a last result still ties its k-th, so ties at the cut follow the
    seeded order.
    """
    rows = np.asarray(rows)
    items = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    depths = search_depths(np.diff(exclude.indptr)[rows], k, index.ntotal)
    ranks = tie_order(exclude.shape[1], seed)  # once per call, not per batch (1M items at L)
    for depth in np.unique(depths):
        members = np.flatnonzero(depths == depth)
        for start in range(0, len(members), batch_size):
            batch = members[start:start + batch_size]
            items[batch], scores[batch] = _search_batch(
                index, np.ascontiguousarray(queries[batch], dtype=np.float32), exclude, rows[batch], k,
                int(depth), ranks)
    return items, scores


def _search_batch(index, queries: np.ndarray, exclude: sp.csr_matrix, rows: np.ndarray, k: int,
                  depth: int, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One batch of :func:`search_top_k`, from ``depth`` (doubled while the cut ties)."""
    while True:
        scores, items = index.search(queries, depth)
        items, scores = order_ties(items, scores, ranks)
        top, top_scores = first_k_allowed(items, scores, is_excluded(exclude, rows, items), k)
        cut = top_scores[:, -1]
        if depth >= index.ntotal or not np.any(np.isfinite(cut) & (scores[:, -1] >= cut)):
            return top, top_scores
        depth = min(index.ntotal, depth * 2)
