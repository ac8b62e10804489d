"""The stored EASE model scores new histories as the closed form of the model it was fitted as,
in each of its three solves, and survives a round trip through the home folder."""

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.evaluation.baselines import fit_ease
from recall_pipeline.core.training.ease.store import load_ease, reusable_ease, save_ease


def closed_form_b(x: np.ndarray, lam: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)


@pytest.mark.parametrize("shape, max_items", [((40, 15), 100), ((15, 40), 100), ((40, 30), 10)],
                         ids=["gram", "woodbury", "capped"])
def test_a_stored_model_scores_new_histories_like_the_fitted_one(tmp_path, shape, max_items):
    rng = np.random.default_rng(3)
    x = (rng.random(shape) < 0.3).astype(float)
    scorer, model = fit_ease(sp.csr_matrix(x * 4.5), 7.0, max_items=max_items,
                             max_dense_cells=10_000 if shape[0] < shape[1] else 0)
    assert (model.kinv_x is not None) == (shape == (15, 40))
    # a history times B reads B's rows: stored row by row (LAPACK's column order was 21x slower at M)
    assert model.weights is None or model.weights.flags.c_contiguous
    item_ids = np.arange(100, 100 + shape[1])
    save_ease(model, tmp_path / "ease.npz", item_ids, "run-1", max_items)
    stored, why = reusable_ease(tmp_path / "ease.npz", item_ids, 7.0, max_items)
    assert stored is not None and stored.fit_run == "run-1" and "run-1" in why
    # the training rows themselves: as the in-run scorer
    assert np.allclose(stored.model.scores(sp.csr_matrix(x)), scorer(np.arange(shape[0])), atol=1e-9)
    # new histories (a user with changed feedback): the same fitted B applied to them
    new = (rng.random((5, shape[1])) < 0.4).astype(float)
    if model.columns is None:
        expected = new @ closed_form_b(x, 7.0)
    else:
        cols = model.columns
        expected = np.full(new.shape, -np.inf)
        expected[:, cols] = new[:, cols] @ closed_form_b(x[:, cols], 7.0)
    assert np.allclose(stored.model.scores(sp.csr_matrix(new * 3.0)), expected, atol=1e-9)
    assert not (tmp_path / ".ease.npz.tmp").exists() and [p.name for p in tmp_path.iterdir()] == ["ease.npz"]


def test_a_stored_model_is_refused_for_another_catalogue_or_settings(tmp_path):
    x = sp.csr_matrix((np.random.default_rng(0).random((10, 6)) < 0.5).astype(float))
    _, model = fit_ease(x, 5.0)
    ids = np.array(["a", "b", "c", "d", "e", "f"])
    assert reusable_ease(tmp_path / "ease.npz", ids, 5.0, 100)[0] is None  # nothing stored yet
    save_ease(model, tmp_path / "ease.npz", ids, "run-1", 100)
    assert reusable_ease(tmp_path / "ease.npz", ids, 5.0, 100)[0] is not None
    assert "catalogue changed" in reusable_ease(tmp_path / "ease.npz", ids[:-1], 5.0, 100)[1]
    assert "settings changed" in reusable_ease(tmp_path / "ease.npz", ids, 6.0, 100)[1]
    assert load_ease(tmp_path / "ease.npz").model.n_items == 6
    # no windowed term is one setting whatever the window says (weight 0 fits EASE alone)
    stored = load_ease(tmp_path / "ease.npz")
    assert stored.matches(ids, 5.0, 100, window=20, window_weight=0.0) is None
    assert "settings changed" in stored.matches(ids, 5.0, 100, window=20, window_weight=0.5)


def test_the_item_counts_of_the_fit_are_kept_with_the_model(tmp_path):
    x = sp.csr_matrix((np.random.default_rng(0).random((10, 6)) < 0.5).astype(float))
    _, model = fit_ease(x, 5.0)
    ids = np.arange(6)
    save_ease(model, tmp_path / "ease.npz", ids, "run-1", 100, item_counts=np.diff(x.tocsc().indptr))
    assert load_ease(tmp_path / "ease.npz").item_counts.tolist() == np.diff(x.tocsc().indptr).tolist()
    save_ease(model, tmp_path / "old.npz", ids, "run-1", 100)  # as stored before the counts were kept
    assert load_ease(tmp_path / "old.npz").item_counts is None
