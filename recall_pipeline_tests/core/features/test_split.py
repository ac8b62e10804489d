"""The split reproduces docs/EVALUATION.md's check table exactly."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from recall_pipeline.core.features.split import SplitProtocol, cold_items, split_interactions, split_summary


def test_bundled_split_counts(bundled_split):
    _, split = bundled_split
    assert split_summary(split) == {
        "cold_items": 906,
        "cold_interactions": 8_750,
        "train_interactions": 72_737,
        "train_users": 671,
        "train_items": 6_967,
        "warm_test_interactions": 18_517,
        "warm_test_relevant": 8_791,
        "warm_slice_users": 653,
        "sparse_slice_users": 195,
        "cold_slice_users": 601,
        "cold_relevant": 4_299,
        "validation_fit": 57_915,
        "validation_holdout": 14_822,
    }


def test_bundled_cold_items_first_ten(bundled_split):
    _, split = bundled_split
    cold = cold_items(split["item_id"].to_numpy(), SplitProtocol())
    assert sorted(cold.tolist())[:10] == [2, 13, 38, 53, 57, 69, 86, 88, 93, 99]


def test_last_ceil_fifth_per_user_by_time_then_item():
    t0 = datetime(2020, 1, 1)
    # user 1: 6 interactions -> ceil(1.2) = 2 test; two share the last timestamp (item order decides)
    rows = [(1, item, 4.0, t0 + timedelta(days=day)) for item, day in
            [(5, 0), (4, 1), (3, 2), (9, 3), (8, 4), (7, 4)]]
    rows += [(2, 6, 2.0, t0)]  # user 2: 1 interaction -> ceil(0.2) = 1 test, nothing to train
    clean = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    split = split_interactions(clean, SplitProtocol(cold_fraction=0.0))
    tests = split.filter(pl.col("part") == "warm_test").select("user_id", "item_id").rows()
    assert tests == [(1, 7), (1, 8), (2, 6)]
    train = split.filter(pl.col("part") == "train")
    # validation: 4 training interactions -> ceil(0.8) = 1 holdout, the latest
    assert train.filter(pl.col("val_part") == "holdout")["item_id"].to_list() == [9]
    assert split.filter(pl.col("user_id") == 2)["is_relevant"].to_list() == [False]


def test_cold_items_leave_training_entirely():
    t0 = datetime(2020, 1, 1)
    rows = [(u, i, 5.0, t0 + timedelta(hours=i)) for u in range(3) for i in range(20)]
    clean = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    split = split_interactions(clean)
    cold = set(cold_items(np.arange(20), SplitProtocol()).tolist())
    assert len(cold) == 2
    assert set(split.filter(pl.col("part") == "cold_test")["item_id"].to_list()) == cold
    assert not set(split.filter(pl.col("part") != "cold_test")["item_id"].to_list()) & cold
