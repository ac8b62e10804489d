"""Ad-hoc recall for a history given as items: its EASE route ranks as the nightly route ranks a
stored user with that history, and the serving version's trust weighs the two-tower route."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.serving import adhoc
from recall_pipeline.core.serving.routes import RouteSettings, ease_route, fit_ease_route


def constructed_matrix(n_users: int = 40, n_items: int = 30, seed: int = 3):
    """Users taking up items in sequences that favour neighbours (item i then i+1 or i+2), so
    that recency and the windowed term both change the EASE route's order."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        item, start = int(rng.integers(n_items)), datetime(2020, 1, 1)
        for step in range(int(rng.integers(4, 12))):
            rows.append((user, item, 4.0, start + timedelta(days=step), "train"))
            item = (item + int(rng.integers(1, 3))) % n_items
    split = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")
    split = split.unique(["user_id", "item_id"], keep="first", maintain_order=True)
    return split, build_rating_matrix(split, np.arange(n_items))


@pytest.mark.parametrize("settings", [RouteSettings(depth=10, ease_lambda=5.0, ease_window=3, ease_window_weight=0.5),
                                      RouteSettings(depth=10, ease_lambda=5.0, ease_recency_tau=0.0, ease_window=0)])
def test_the_ease_route_of_a_given_history_is_the_nightly_route_of_that_user(settings):
    split, rm = constructed_matrix()
    model = fit_ease_route(rm, settings)
    nightly = ease_route(rm, settings, np.arange(len(rm.user_ids)), model)
    for row, user in enumerate(rm.user_ids):
        history = split.filter(pl.col("user_id") == user).sort("timestamp", "item_id")["item_id"].to_numpy()
        seen = rm.matrix[row]
        given = adhoc.ease_list(model, history, len(rm.item_ids), seen, settings.depth, settings)
        assert given[0].tolist() == nightly[row].tolist(), user


def test_recency_places_count_from_the_latest_and_a_repeated_item_keeps_its_latest_place():
    row = adhoc.recency_history(np.array([4, 2, 4, 7]), 8, tau=1.0, floor=0.5)
    weights = dict(zip(row.indices.tolist(), row.data.tolist()))
    assert weights == pytest.approx({7: 1.0, 4: 0.5 + 0.5 * np.exp(-1), 2: 0.5 + 0.5 * np.exp(-2)})
    flat = adhoc.recency_history(np.array([4, 2, 4, 7]), 8, tau=0.0, floor=0.5)
    assert sorted(flat.indices.tolist()) == [2, 4, 7] and flat.data.tolist() == [1.0, 1.0, 1.0]
