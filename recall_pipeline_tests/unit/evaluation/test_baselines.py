"""Baselines: EASE equals its closed form; ItemKNN keeps its neighbours; tuning picks the best."""

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.evaluation.baselines import (
    ItemKNN, ease, ease_maker, fit_ease, item_knn, item_knn_maker, most_popular, tune, validation_recall,
)
from recall_pipeline.core.training.ease.model import EaseSolver, _spd_inverse


def reference_ease(x: np.ndarray, lam: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)
    return x @ b


@pytest.mark.parametrize("shape", [(40, 15), (15, 40)])  # both the primal and the Woodbury form
def test_ease_equals_the_closed_form(shape):
    x = (np.random.default_rng(1).random(shape) < 0.3).astype(float)
    scores = ease(sp.csr_matrix(x * 4.5), 7.0)(np.arange(shape[0]))  # ratings are binarised
    assert np.allclose(scores, reference_ease(x, 7.0), atol=1e-9)


@pytest.mark.parametrize("shape,max_items", [((40, 15), 1000), ((15, 40), 1000), ((40, 15), 10)],
                         ids=["gram", "woodbury", "capped"])
def test_weighted_histories_score_as_the_closed_form_of_the_weighted_row(shape, max_items):
    """The EASE route scores recency-weighted histories h B: every solve must give the closed
    form for a non-binary h (the capped solve: over its kept items), not h binarised."""
    rng = np.random.default_rng(2)
    x = (rng.random(shape) < 0.3).astype(float)
    weights = x * rng.uniform(0.2, 1.0, shape)
    _, model = fit_ease(sp.csr_matrix(x), 7.0, max_items=max_items)
    scores = model.scores(sp.csr_matrix(weights), binarize=False)
    kept = np.sort(np.argsort(-x.sum(axis=0), kind="stable")[:max_items])
    assert np.allclose(scores[:, kept], weights[:, kept] @ ease_b(x[:, kept], 7.0), atol=1e-9)
    assert np.isneginf(np.delete(scores, kept, axis=1)).all()
    assert not np.allclose(scores[:, kept], model.scores(sp.csr_matrix(weights))[:, kept])  # binarised differs


@pytest.mark.parametrize("shape,max_items", [((40, 15), 1000), ((15, 40), 1000), ((40, 15), 10)],
                         ids=["gram", "woodbury", "capped"])
def test_one_solver_fits_every_regularisation_as_its_own_solve_would(shape, max_items):
    """The Gram matrix (X X' for Woodbury) is shared across a grid: each value in any order
    still gives its own closed form, the shared product left intact."""
    x = (np.random.default_rng(4).random(shape) < 0.3).astype(float)
    solver = EaseSolver(sp.csr_matrix(x), max_items=max_items)
    kept = np.sort(np.argsort(-x.sum(axis=0), kind="stable")[:max_items])
    for lam in (50.0, 3.0, 400.0, 3.0):
        scores = solver.fit(lam)[0](np.arange(shape[0]))
        assert np.allclose(scores[:, kept], x[:, kept] @ ease_b(x[:, kept], lam), atol=1e-9)
        assert np.isneginf(np.delete(scores, kept, axis=1)).all()


def test_the_grid_s_maker_solves_each_matrix_it_is_given():
    rng = np.random.default_rng(5)
    first, second = ((rng.random((30, 12)) < 0.3).astype(float) for _ in range(2))
    make = ease_maker()
    for x in (first, first, second, first):
        assert np.allclose(make(sp.csr_matrix(x), 9.0)(np.arange(30)), reference_ease(x, 9.0), atol=1e-9)


@pytest.mark.parametrize("n", [1, 7, 513, 1100])  # within one block of rows and across several
def test_the_cholesky_inverse_equals_the_inverse_in_place_and_refuses_a_matrix_not_positive_definite(n):
    a = np.random.default_rng(n).standard_normal((n, n + 3))
    spd = a @ a.T + np.eye(n)
    inverse = spd.copy()
    _spd_inverse(inverse)
    assert inverse.flags.c_contiguous and np.allclose(inverse, np.linalg.inv(spd), rtol=1e-9, atol=1e-12)
    assert np.array_equal(inverse, inverse.T)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        _spd_inverse(-spd)


def ease_b(x: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P / diag(P), P = (X'X + lam I)^-1."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)


def test_item_knn_keeps_the_top_neighbours():
    # items 0 and 1 always co-occur; item 2 sometimes with 0; item 3 never seen
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=float))
    full = item_knn(x, 3)(np.array([3]))  # user 3 saw item 2 only
    cos_02 = 1 / np.sqrt(3 * 2)
    assert full[0, 0] == pytest.approx(cos_02) and full[0, 3] == 0.0
    # with one neighbour per item, item 0's only neighbour is item 1, so item 2 does not reach 0
    assert item_knn(x, 1)(np.array([3]))[0, 0] == 0.0


def test_item_knn_scores_the_same_dense_sparse_and_from_one_similarity_per_matrix():
    """The dense similarity (computed once per matrix, pruned per neighbour count) and the
    sparse one built in column blocks give the same scores, for every count the tuning tries
    (many users: no two cosines tie, where the two would break ties differently)."""
    rng = np.random.default_rng(4)
    x = sp.csr_matrix((rng.random((2000, 30)) < rng.uniform(0.05, 0.5, 30)).astype(float))
    rows = np.arange(0, 2000, 25)
    make = item_knn_maker(40)
    for neighbours in (1, 3, 10, 40):
        dense = item_knn(x, neighbours)(rows)
        sparse = item_knn(x, neighbours, max_dense_bytes=0)(rows)
        np.testing.assert_allclose(dense, sparse, rtol=1e-6)
        assert np.array_equal(make(x, neighbours)(rows), dense)
    assert (dense > 0).sum() > (item_knn(x, 1)(rows) > 0).sum()  # more neighbours reach more items


def test_sparse_item_knn_ranked_once_gives_each_counts_own_neighbours_ties_included():
    """Above the dense size the similarity is ranked once to the grid's largest count; each
    smaller count's neighbours must be exactly those a similarity built for it alone keeps,
    also where cosines tie at the cut (few users: many ties, broken by item order)."""
    rng = np.random.default_rng(7)
    x = sp.csr_matrix((rng.random((25, 40)) < 0.25).astype(float))
    rows = np.arange(25)
    ranked = ItemKNN(x, max_dense_bytes=0, most_neighbours=12)
    for neighbours in (1, 2, 5, 12, 30):  # 30: above the ranked count, built for itself
        assert np.array_equal(ranked.scorer(neighbours)(rows), item_knn(x, neighbours, max_dense_bytes=0)(rows))


def test_item_knn_over_the_most_interacted_items_equals_itemknn_without_the_others(monkeypatch):
    """Above ``max_items`` items with interactions only the most-interacted take part (ties by
    item order): the scores are those of ItemKNN on the matrix without the other items'
    columns, the others score 0; and the sparse build gives the same whatever its block size
    (a block of one column each, when the cells allowed per block are fewer than the items)."""
    from recall_pipeline.core.evaluation import baselines

    rng = np.random.default_rng(5)
    x = sp.csr_matrix((rng.random((300, 30)) < rng.uniform(0.02, 0.4, 30)).astype(float))
    counts = np.asarray(x.sum(axis=0)).ravel()
    top = np.sort(np.argsort(-counts, kind="stable")[:12])
    without = sp.csr_matrix(x.toarray() * np.isin(np.arange(30), top))
    rows = np.arange(0, 300, 7)
    for dense_bytes in (None, 0):
        capped = ItemKNN(x, max_dense_bytes=dense_bytes, max_items=12).scorer(5)(rows)
        np.testing.assert_allclose(capped, item_knn(without, 5, max_dense_bytes=dense_bytes)(rows), rtol=1e-6)
        assert not capped[:, np.setdiff1d(np.arange(30), top)].any() and capped.any()
    whole = item_knn(x, 5, max_dense_bytes=0)(rows)
    monkeypatch.setattr(baselines, "KNN_BLOCK_CELLS", 1)
    np.testing.assert_array_equal(item_knn(x, 5, max_dense_bytes=0)(rows), whole)


def test_most_popular_and_tuning_on_a_planted_structure():
    rng = np.random.default_rng(0)
    # two user groups with disjoint tastes; popularity ignores them, EASE finds them
    x = np.zeros((60, 20))
    x[:30, :10] = rng.random((30, 10)) < 0.6
    x[30:, 10:] = rng.random((30, 10)) < 0.6
    x[:, 0] = 1  # one item everybody has: the most popular
    fit, holdout = x.copy(), np.zeros_like(x)
    for user in range(60):
        seen = np.flatnonzero(x[user, 1:]) + 1
        fit[user, seen[-1]], holdout[user, seen[-1]] = 0, 1
    fit, holdout = sp.csr_matrix(fit), sp.csr_matrix(holdout)
    assert most_popular(fit)(np.array([0, 1])).shape == (2, 20)
    ease_recall = validation_recall(ease(fit, 1.0), fit, holdout, k=5)
    pop_recall = validation_recall(most_popular(fit), fit, holdout, k=5)
    assert ease_recall > pop_recall + 0.2
    tuned = tune(ease, [1.0, 10_000.0], fit, holdout)
    assert tuned.value == 1.0 and set(tuned.validation_recall) == {1.0, 10_000.0}
