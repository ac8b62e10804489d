"""The two-tower version's validation lists: stored with the version, placed on the current
catalogue, and used only on the cut they were made on."""

import numpy as np
import pytest

from recall_pipeline.core.recall import validation_routes as vr


def stored(tmp_path, cut="cut-1"):
    item_ids = np.array([10, 20, 30, 40])
    lists = np.array([[3, 0, -1], [1, 2, 3]])
    vr.save_model_lists(tmp_path, np.array([7, 9]), lists, item_ids, cut)
    return vr.load_model_lists(tmp_path)


def test_lists_round_trip_and_follow_the_catalogue_by_id(tmp_path):
    lists = stored(tmp_path)
    catalogue = np.array([5, 10, 20, 40, 50])  # item 30 left, items 5 and 50 arrived
    placed, why = vr.placed_model_lists(lists, "cut-1", np.array([9, 7]), catalogue, depth=4)
    assert why == ""
    assert placed.tolist() == [[2, -1, 3, -1], [3, 1, -1, -1]]  # users in the order asked; 30 is gone


def test_lists_of_another_cut_or_other_users_are_not_used(tmp_path):
    lists = stored(tmp_path)
    catalogue = np.array([10, 20, 30, 40])
    placed, why = vr.placed_model_lists(lists, "cut-2", np.array([7]), catalogue, 3)
    assert placed is None and "another cut" in why
    placed, why = vr.placed_model_lists(lists, "cut-1", np.array([7, 8]), catalogue, 3)
    assert placed is None and "other users" in why
    placed, why = vr.placed_model_lists(None, "cut-1", np.array([7]), catalogue, 3)
    assert placed is None and "earlier release" in why
    assert vr.load_model_lists(tmp_path / "missing") is None


def test_text_ids_are_stored_without_pickle(tmp_path):
    item_ids = np.array(["a", "b", "c"], dtype=object)
    vr.save_model_lists(tmp_path, np.array(["u1"], dtype=object), np.array([[2, 0]]), item_ids, "c")
    placed, _ = vr.placed_model_lists(vr.load_model_lists(tmp_path), "c", np.array(["u1"], dtype=object),
                                      np.array(["a", "b", "c"], dtype=object), 2)
    assert placed.tolist() == [[2, 0]]


def histories(n_users: int, n_items: int, seed: int):
    """A rating matrix (with recency: one day between a user's interactions) and held-out items."""
    import polars as pl
    import scipy.sparse as sp

    from recall_pipeline.core.features.rating_matrix import build_rating_matrix

    rng = np.random.default_rng(seed)
    rows = [(u, int(i), 4.0, day) for u in range(n_users)
            for day, i in enumerate(rng.permutation(n_items)[:rng.integers(3, n_items // 3)])]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    rm = build_rating_matrix(frame.with_columns(part=pl.lit("train")), np.arange(n_items))
    held = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(float))
    return rm, held


@pytest.mark.parametrize("n_users, n_items, max_items", [(60, 40, 100), (30, 80, 100), (60, 50, 20)],
                         ids=["gram", "woodbury", "capped"])
def test_every_variant_s_lists_are_the_route_s_own_and_a_pinned_run_builds_the_start_s_alone(n_users, n_items,
                                                                                           max_items):
    from recall_pipeline.core.recall.route_selection import EaseVariant, ease_variants
    from recall_pipeline.core.recall.routes import RouteSettings, ease_route

    rm, held = histories(n_users, n_items, 4)
    start = RouteSettings(depth=10, ease_max_items=max_items, ease_window=3, ease_window_weight=0.5)
    rows = np.arange(0, n_users, 2)
    lists, recall = vr.ease_lists(rm, start, rows, held[rows])
    assert set(recall) == {50.0, 100.0, 200.0, 400.0, 800.0, 1600.0}
    best = max(recall, key=lambda lam: (recall[lam], -abs(np.log(lam / start.ease_lambda))))
    assert set(lists) == set(ease_variants(start, best))
    # the models, plain ones and window pairs shared across the grid and the variants change
    # nothing: each variant's lists are those of the route fitted from scratch with its settings
    for variant, got in lists.items():
        assert np.array_equal(got, ease_route(rm, variant.applied(start), rows)), variant.name
    pinned, none = vr.ease_lists(rm, start, rows, held[rows], only_start=True)
    assert none == {} and list(pinned) == [EaseVariant.of(start)]
    assert np.array_equal(pinned[EaseVariant.of(start)], lists[EaseVariant.of(start)])
