"""User profiles: weights, dislikes, interest text, and multi-interest clustering."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.features.user_profiles import (
    ProfileSettings, build_user_profiles, cluster_interests, history_weights, interest_count,
    interest_texts, multi_interests, top_genres,
)

T0 = datetime(2020, 1, 1)


def train_frame(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")


def test_weights_are_rating_share_times_decay_with_dislikes_down():
    train = train_frame([(1, 10, 5.0, T0), (1, 11, 2.5, T0 + timedelta(days=365)), (2, 10, None, T0)])
    weighted = history_weights(train, ProfileSettings(dislike_weight=0.25))
    # user 1's mean is 3.75: item 11 (2.5) is disliked, a quarter of its weight
    assert weighted["liked"].to_list() == [True, False, True]
    assert weighted["weight"].to_list() == pytest.approx([1.0 * 0.5, 0.5 * 1.0 * 0.25, 1.0])


def test_history_vector_is_normalised_weighted_mean():
    items, vectors = np.array([10, 11, 12]), np.eye(3, dtype=np.float32)
    train = train_frame([(7, 10, 5.0, T0), (7, 11, 2.5, T0), (8, 12, 1.0, T0)])
    profiles = build_user_profiles(train, items, vectors)
    assert profiles.user_ids.tolist() == [7, 8] and profiles.history_sizes.tolist() == [2, 1]
    expected = np.array([1.0, 0.5 * 0.25, 0.0])
    assert np.allclose(profiles.vectors[0], expected / np.linalg.norm(expected))
    assert np.allclose(profiles.vectors[1], [0, 0, 1])


def test_interest_text_names_liked_genres_and_recent_titles():
    items = pl.DataFrame({"item_id": [1, 2, 3, 4], "title": ["Alien", "Heat", "Up", "Cats"],
                          "year": ["1979", "1995", None, "2019"],
                          "genres": [["Horror", "Sci-Fi"], ["Crime"], ["Animation"], ["Musical"]]})
    train = train_frame([(5, 1, 5.0, T0), (5, 2, 4.0, T0 + timedelta(days=1)),
                         (5, 3, 5.0, T0 + timedelta(days=2)), (5, 4, 1.0, T0 + timedelta(days=3))])
    [(user, text)] = interest_texts(train, items, ProfileSettings(text_genres=2, text_titles=2)).rows()
    # mean 3.75: Cats (1.0) is disliked and never mentioned
    assert user == 5
    assert text == "Likes Animation and Horror. Recently liked Up and Heat (1995)."


def test_top_genres_are_the_same_on_every_call_and_equal_weights_go_by_name():
    # every item is Action and Adventure, or Comedy and Drama: each pair ties exactly, and goes
    # by name. polars' parallel group-by sum added some of these sums in another order on each
    # call, and a tie was then decided by the last bit
    rng = np.random.default_rng(0)
    n = 70_000
    pairs = [["Action", "Adventure"], ["Comedy", "Drama"]]
    liked = pl.DataFrame({"user_id": np.sort(rng.integers(0, 500, n)), "weight": rng.random(n),
                          "genres": [pairs[i] for i in rng.integers(0, 2, n)]}).explode("genres")
    first = top_genres(liked, 4)
    assert first["genres"].list.len().min() == 4
    assert all(g.index("Action") + 1 == g.index("Adventure") and g.index("Comedy") + 1 == g.index("Drama")
               for g in first["genres"].to_list())
    for _ in range(8):
        assert top_genres(liked, 4).equals(first)


def test_interest_count_grows_with_history():
    assert [interest_count(n) for n in (0, 5, 10, 25, 39, 200)] == [1, 1, 1, 2, 3, 4]


def test_a_two_taste_user_gets_both_tastes():
    rng = np.random.default_rng(0)
    horror, children = np.eye(8)[0], np.eye(8)[1]
    liked = np.vstack([horror + 0.1 * rng.normal(size=(15, 8)), children + 0.1 * rng.normal(size=(15, 8))])
    liked /= np.linalg.norm(liked, axis=1, keepdims=True)
    item_ids = np.arange(30)
    train = train_frame([(1, int(i), 5.0, T0) for i in item_ids])
    settings = ProfileSettings(items_per_interest=10)
    interests = multi_interests(train, item_ids, liked.astype(np.float32), settings)
    # 30 liked items at 10 per interest: three interests, numbered from the heaviest
    assert interests.height == interest_count(30, settings) == 3
    assert interests["interest"].to_list() == [0, 1, 2]
    assert interests["weight"].to_list() == sorted(interests["weight"].to_list(), reverse=True)
    # every item weighs the same here (all rated 5.0 on one day): an interest's share is its items' share
    assert interests["weight"].to_list() == pytest.approx((interests["n_items"] / 30).to_list())
    centroids = interests["embedding"].to_numpy()
    best_horror = (centroids @ horror).max()
    best_children = (centroids @ children).max()
    assert best_horror > 0.95 and best_children > 0.95          # each taste has its own centroid
    mean = liked.mean(axis=0) / np.linalg.norm(liked.mean(axis=0))
    assert mean @ horror < 0.8 and mean @ children < 0.8        # the plain mean is neither
    assert interests["weight"].sum() == pytest.approx(1.0)
    assert interests["n_items"].sum() == 30


def test_few_items_give_one_interest_equal_to_the_weighted_mean():
    vectors = np.eye(3)
    [(centroid, share, n)] = cluster_interests(vectors, np.array([1.0, 1.0, 2.0]), k=1)
    assert share == 1.0 and n == 3
    assert np.allclose(centroid, np.array([1, 1, 2]) / np.sqrt(6))
