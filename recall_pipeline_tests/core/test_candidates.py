"""Recall lists: profile search for users with history, popularity for those without."""

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.candidates import (
    candidates_frame, lists_from_frame, recall_lists, vectors_by_user,
)
from recall_pipeline.core.ids import CatalogueMismatchError
from recall_pipeline.core.index import build_exact_index
from recall_pipeline.core.matrix import build_rating_matrix


def test_lists_exclude_history_and_fall_back_to_popularity():
    t = datetime(2020, 1, 1)
    split = pl.DataFrame(
        [(1, 10, 5.0, t, "train"), (2, 10, 4.0, t, "train"), (2, 11, 4.0, t, "train"),
         (3, 12, 4.0, t, "warm_test")],  # user 3 has no training history
        schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")
    rm = build_rating_matrix(split, np.array([10, 11, 12, 13]))
    vectors = np.eye(4, dtype=np.float32)
    profiles = np.array([[1, 0.5, 0.2, 0.1], [0.9, 0.8, 0.1, 0.2]], dtype=np.float32)
    index = build_exact_index(vectors)
    items, scores, route = recall_lists(index, rm.item_ids, rm, np.array([1, 2]), profiles, k=3)
    assert route.tolist() == ["lm_profile", "lm_profile", "popularity"]
    assert items[0].tolist() == [1, 2, 3]        # item 10 (position 0) is in user 1's history
    assert items[1].tolist() == [3, 2, -1]       # only two items left for user 2
    assert items[2].tolist()[:2] == [0, 1]       # most popular first: 10 (2 users), 11 (1 user)
    frame = candidates_frame(rm, items, scores, route)
    assert frame.filter(pl.col("user_id") == 2).select("rank", "item_id").rows() == [(1, 13), (2, 12)]
    assert frame.height == 8
    assert (lists_from_frame(rm, frame)[:, :3] == items).all()  # the stored form round-trips


def test_an_index_over_another_catalogue_is_refused():
    t = datetime(2020, 1, 1)
    split = pl.DataFrame([(1, 10, 5.0, t, "train")], schema=["user_id", "item_id", "rating", "timestamp", "part"],
                         orient="row")
    rm = build_rating_matrix(split, np.array([10, 11, 12]))
    index = build_exact_index(np.eye(3, dtype=np.float32))
    with pytest.raises(CatalogueMismatchError, match="FAISS index"):
        recall_lists(index, np.array([10, 11, 99]), rm, np.array([1]), np.ones((1, 3), np.float32), k=2)
    with pytest.raises(CatalogueMismatchError, match="1 profile users"):
        vectors_by_user(rm, np.array([7]), np.ones((1, 3)))
