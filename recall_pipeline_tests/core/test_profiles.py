"""User profiles: weights by rating and recency, normalised weighted means."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.profiles import build_user_profiles, history_weights

T0 = datetime(2020, 1, 1)


def train_frame(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")


def test_weights_are_rating_share_times_half_life_decay():
    train = train_frame([(1, 10, 5.0, T0), (1, 11, 2.5, T0 + timedelta(days=365)), (2, 10, None, T0)])
    weights = history_weights(train, rating_max=5.0, half_life_days=365.0)["weight"].to_list()
    assert weights == pytest.approx([1.0 * 0.5, 0.5 * 1.0, 1.0])


def test_profile_is_normalised_weighted_mean():
    items = np.array([10, 11, 12])
    vectors = np.eye(3, dtype=np.float32)
    train = train_frame([(7, 10, 5.0, T0), (7, 11, 2.5, T0), (8, 12, 1.0, T0)])
    profiles = build_user_profiles(train, items, vectors)
    assert profiles.user_ids.tolist() == [7, 8]
    assert profiles.history_sizes.tolist() == [2, 1]
    expected = np.array([1.0, 0.5, 0.0]) / np.linalg.norm([1.0, 0.5, 0.0])
    assert np.allclose(profiles.vectors[0], expected)
    assert np.allclose(profiles.vectors[1], [0, 0, 1])
