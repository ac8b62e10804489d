"""The two-tower version's validation lists: stored with the version, placed on the current
catalogue, and used only on the cut they were made on."""

import numpy as np

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
