"""The training rating matrix and its stored form."""

from datetime import datetime

import numpy as np
import polars as pl

from recall_pipeline.core.features.rating_matrix import build_rating_matrix, load_rating_matrix, save_rating_matrix


def split_frame(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")


def test_matrix_holds_training_ratings_over_the_whole_catalogue(tmp_path):
    split = split_frame([
        ("b", "x", 4.0, datetime(2020, 1, 1), "train"),
        ("b", "x", 2.0, datetime(2020, 1, 3), "train"),   # re-rated later: the latest counts
        ("a", "y", 5.0, datetime(2020, 1, 2), "train"),
        ("a", "z", 3.0, datetime(2020, 1, 4), "warm_test"),
        ("c", "z", 1.0, datetime(2020, 1, 4), "cold_test"),
    ])
    rm = build_rating_matrix(split, np.array(["z", "y", "x", "w"], dtype=object))
    assert rm.user_ids.tolist() == ["a", "b", "c"]
    assert rm.item_ids.tolist() == ["w", "x", "y", "z"]
    assert rm.matrix.toarray().tolist() == [[0, 0, 5, 0], [0, 2, 0, 0], [0, 0, 0, 0]]
    save_rating_matrix(rm, tmp_path / "m.npz")
    loaded = load_rating_matrix(tmp_path / "m.npz")
    assert loaded.user_ids.tolist() == ["a", "b", "c"]
    assert (loaded.matrix != rm.matrix).nnz == 0


def test_implicit_feedback_counts_one(tmp_path):
    split = split_frame([(1, 7, None, datetime(2020, 1, 1), "train")])
    rm = build_rating_matrix(split, np.array([7, 8]))
    assert rm.matrix.toarray().tolist() == [[1.0, 0.0]]
    assert rm.item_index().rows() == [(7, 0), (8, 1)]
