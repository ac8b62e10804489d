"""Recall lists: profile search for users with history, popularity for those without."""

from datetime import datetime

import numpy as np
import polars as pl

from recall_pipeline.core.candidates import candidates_frame, recall_lists
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
    items, scores, route = recall_lists(build_exact_index(vectors), rm, np.array([1, 2]), profiles, k=3)
    assert route.tolist() == ["lm_profile", "lm_profile", "popularity"]
    assert items[0].tolist() == [1, 2, 3]        # item 10 (position 0) is in user 1's history
    assert items[1].tolist() == [3, 2, -1]       # only two items left for user 2
    assert items[2].tolist()[:2] == [0, 1]       # most popular first: 10 (2 users), 11 (1 user)
    frame = candidates_frame(rm, items, scores, route)
    assert frame.filter(pl.col("user_id") == 2).select("rank", "item_id").rows() == [(1, 13), (2, 12)]
    assert frame.height == 8
