"""The EASE route's windowed term: the pair counts it is built from, its closed form in each of
EASE's three solves, and the ranking it changes on data where the right answer is known."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall_pipeline.core.evaluation.baselines import fit_ease
from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.training.ease.store import load_ease, reusable_ease, save_ease
from recall_pipeline.core.training.ease import windowed as windowed_ease


def matrix_of(histories: dict[int, list[int]], n_items: int):
    """A rating matrix from each user's items in the order taken up (one day apart)."""
    rows = [(user, item, 4.0, day) for user, items in histories.items() for day, item in enumerate(items)]
    split = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    return build_rating_matrix(split.with_columns(part=pl.lit("train")), np.arange(n_items))


def test_pairs_count_each_user_s_interactions_at_most_window_places_apart():
    rm = matrix_of({0: [3, 1, 0, 2], 1: [1, 3]}, 5)
    one = windowed_ease.window_pairs(rm, 1).toarray()
    expected = np.zeros((5, 5))
    for i, j in [(3, 1), (1, 0), (0, 2), (1, 3)]:  # neighbours in time, each user on their own
        expected[i, j] += 1
        expected[j, i] += 1
    assert np.array_equal(one, expected)
    two = windowed_ease.window_pairs(rm, 2).toarray()
    expected[3, 0] += 1; expected[0, 3] += 1; expected[1, 2] += 1; expected[2, 1] += 1
    assert np.array_equal(two, expected)
    # a window longer than every history: every pair of a user's items, never an item with itself
    assert np.array_equal(windowed_ease.window_pairs(rm, 10).toarray(), windowed_ease.window_pairs(rm, 3).toarray())
    assert np.diag(windowed_ease.window_pairs(rm, 10).toarray()).sum() == 0


def random_histories(n_users: int, n_items: int, seed: int) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    return {u: list(rng.permutation(n_items)[:rng.integers(2, n_items // 2)]) for u in range(n_users)}


@pytest.mark.parametrize("n_users, n_items, max_items", [(40, 15, 100), (15, 40, 100), (40, 30, 10)],
                         ids=["gram", "woodbury", "capped"])
def test_every_solve_scores_ease_plus_the_scaled_closed_form_of_the_windowed_term(n_users, n_items, max_items):
    rm = matrix_of(random_histories(n_users, n_items, 1), n_items)
    lam, window, weight = 7.0, 3, 0.8
    model = windowed_ease.fit(rm, lam, max_items, window, weight)
    plain = fit_ease(rm.matrix, lam, max_items)[1]
    assert (model.kinv_x is not None) == (n_users < n_items)
    cols = np.arange(n_items) if plain.columns is None else plain.columns
    x = (rm.matrix.toarray() > 0).astype(float)[:, cols]
    p = np.linalg.inv(x.T @ x + lam * np.eye(len(cols)))
    b = np.eye(len(cols)) - p / np.diag(p)
    term = p @ windowed_ease.window_pairs(rm, window).toarray()[np.ix_(cols, cols)]
    new = np.random.default_rng(2).random((6, n_items)) * (np.random.default_rng(3).random((6, n_items)) < 0.4)
    scores = model.scores(sp.csr_matrix(new), binarize=False)[:, cols]
    # the scale: the windowed term's spread is `weight` times EASE's on the sampled users (all of them here)
    scale = weight * (x @ b).std() / (x @ term).std()
    assert np.allclose(scores, new[:, cols] @ (b + scale * term), atol=1e-8)
    if plain.columns is not None:  # a capped model proposes nothing outside its columns
        others = np.setdiff1d(np.arange(n_items), cols)
        assert np.isneginf(model.scores(sp.csr_matrix(new), binarize=False)[:, others]).all()


@pytest.mark.parametrize("n_users, n_items, max_items", [(40, 15, 100), (15, 40, 100), (40, 30, 10)],
                         ids=["gram", "woodbury", "capped"])
def test_a_term_added_to_plain_ease_already_fitted_equals_the_whole_fit(n_users, n_items, max_items):
    rm = matrix_of(random_histories(n_users, n_items, 4), n_items)
    base = fit_ease(rm.matrix, 7.0, max_items)[1]
    extended = windowed_ease.fit(rm, 7.0, max_items, 3, 0.8, base=base)
    whole = windowed_ease.fit(rm, 7.0, max_items, 3, 0.8)
    new = sp.csr_matrix(np.random.default_rng(5).random((6, n_items)) < 0.4, dtype=float)
    assert np.allclose(extended.scores(new), whole.scores(new), atol=1e-9)
    assert extended.window == 3 and base.window == 0  # the base is left as it was
    assert np.allclose(base.scores(new), fit_ease(rm.matrix, 7.0, max_items)[1].scores(new), atol=1e-12)
    with pytest.raises(ValueError, match="not plain EASE at 8"):
        windowed_ease.fit(rm, 8.0, max_items, 3, 0.8, base=base)
    with pytest.raises(ValueError, match="not plain EASE"):
        windowed_ease.fit(rm, 7.0, max_items, 3, 0.8, base=extended)


def test_the_item_taken_up_next_to_the_history_ranks_above_one_taken_up_far_from_it():
    """Every user takes up a then b, five other items, then c: a, b and c are held by the same
    users, so EASE cannot tell b from c for someone who holds a; b is a's neighbour in time."""
    histories = {u: [0, 1, *(3 + (u + np.arange(5)) % 20), 2] for u in range(30)}
    rm = matrix_of(histories, 23)
    query = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 23))
    plain = fit_ease(rm.matrix, 10.0, 100)[1].scores(query)[0]
    assert plain[1] == pytest.approx(plain[2], abs=1e-12)
    windowed = windowed_ease.fit(rm, 10.0, 100, window=2, weight=1.0).scores(query)[0]
    assert windowed[1] > windowed[2] + 1e-6
    assert windowed_ease.fit(rm, 10.0, 100, window=2, weight=0.0).scores(query)[0] == pytest.approx(plain)


@pytest.mark.parametrize("n_users, n_items", [(40, 15), (15, 40)], ids=["gram", "woodbury"])
def test_a_stored_windowed_model_scores_as_fitted_and_is_refused_for_other_window_settings(tmp_path, n_users, n_items):
    rm = matrix_of(random_histories(n_users, n_items, 4), n_items)
    model = windowed_ease.fit(rm, 5.0, 100, 3, 0.7)
    ids = np.arange(n_items)
    save_ease(model, tmp_path / "ease.npz", ids, "run-1", 100)
    new = sp.csr_matrix(np.random.default_rng(5).random((4, n_items)))
    assert np.allclose(load_ease(tmp_path / "ease.npz").model.scores(new, binarize=False),
                       model.scores(new, binarize=False), atol=1e-10)
    assert reusable_ease(tmp_path / "ease.npz", ids, 5.0, 100, 3, 0.7)[0] is not None
    stored, why = reusable_ease(tmp_path / "ease.npz", ids, 5.0, 100, 5, 0.7)
    assert stored is None and "(5.0, 100, 3, 0.7)" in why and "(5.0, 100, 5, 0.7)" in why
    stored, why = reusable_ease(tmp_path / "ease.npz", ids, 5.0, 100, 0, 0.0)
    assert stored is None and "(5.0, 100, 0, 0.0)" in why


def test_a_matrix_without_recency_gets_ease_alone_recorded_as_window_0():
    rm = matrix_of(random_histories(15, 40, 7), 40)
    old = type(rm)(rm.matrix, rm.user_ids, rm.item_ids, None)  # as stored before recency existed
    model = windowed_ease.fit(old, 5.0, 100, 3, 0.7)
    assert (model.window, model.window_weight, model.sequence) == (0, 0.0, None)
    x = sp.csr_matrix(np.eye(40)[:3])
    assert np.allclose(model.scores(x), fit_ease(rm.matrix, 5.0, 100)[1].scores(x))


def test_pairs_over_a_capped_model_s_columns_are_the_whole_pairs_restricted_to_them():
    rm = matrix_of(random_histories(30, 25, 6), 25)
    columns = np.array([1, 4, 5, 9, 17, 22])
    whole = windowed_ease.window_pairs(rm, 4).toarray()
    assert np.array_equal(windowed_ease.window_pairs(rm, 4, columns).toarray(), whole[np.ix_(columns, columns)])


@pytest.mark.parametrize("n_users, n_items, max_items", [(40, 15, 100), (40, 30, 10)], ids=["gram", "capped"])
def test_the_term_kept_apart_scores_as_the_folded_one_and_is_never_stored(tmp_path, n_users, n_items, max_items):
    rm = matrix_of(random_histories(n_users, n_items, 5), n_items)
    folded = windowed_ease.fit(rm, 7.0, max_items, 3, 0.8)
    apart = windowed_ease.fit(rm, 7.0, max_items, 3, 0.8, fold=False)
    assert isinstance(apart.sequence, np.ndarray) and apart.sequence_scale > 0
    new = sp.csr_matrix(np.random.default_rng(6).random((5, n_items)) * (np.random.default_rng(7).random((5, n_items)) < 0.4))
    got, want = apart.scores(new, binarize=False), folded.scores(new, binarize=False)
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    assert np.allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-9, atol=1e-12)
    plain = fit_ease(rm.matrix, 7.0, max_items)[1].scores(new, binarize=False)
    assert not np.allclose(got[np.isfinite(got)], plain[np.isfinite(plain)])  # the term does change the scores
    with pytest.raises(ValueError, match="not stored"):
        save_ease(apart, tmp_path / "ease.npz", np.arange(n_items), "run", max_items)
