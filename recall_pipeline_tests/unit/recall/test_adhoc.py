"""Ad-hoc recall for a history given as items: its EASE route ranks as the nightly route ranks a
stored user with that history (each form of the EASE solve), and the fused lists weigh every
route as the settings and the serving version's trust say."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.recall import adhoc
from recall_pipeline.core.recall.index import build_exact_index
from recall_pipeline.core.recall.routes import RouteSettings, TextCFRoute, ease_route, fit_ease_route, text_cf_lists
from recall_pipeline.core.training import text_cf, two_tower


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


WITH_TERM = RouteSettings(depth=10, ease_lambda=5.0, ease_window=3, ease_window_weight=0.5)
PLAIN = RouteSettings(depth=10, ease_lambda=5.0, ease_recency_tau=0.0, ease_window=0)
SOLVES = {  # (users, items, settings): which form of EASE fit_ease chooses
    "gram": (40, 30, WITH_TERM), "gram, no recency or term": (40, 30, PLAIN),
    "woodbury": (20, 40, WITH_TERM), "capped": (40, 30, RouteSettings(depth=10, ease_lambda=5.0, ease_max_items=15)),
}


@pytest.mark.parametrize("solve", SOLVES)
def test_the_ease_route_of_a_given_history_is_the_nightly_route_of_that_user(solve):
    n_users, n_items, settings = SOLVES[solve]
    split, rm = constructed_matrix(n_users, n_items)
    model = fit_ease_route(rm, settings)
    assert {"gram": model.weights is not None and model.columns is None, "woodbury": model.kinv_x is not None,
            "capped": model.columns is not None}.get(solve, True)
    nightly = ease_route(rm, settings, np.arange(len(rm.user_ids)), model)
    for row, user in enumerate(rm.user_ids):
        history = split.filter(pl.col("user_id") == user).sort("timestamp", "item_id")["item_id"].to_numpy()
        given = adhoc.ease_list(model, history, len(rm.item_ids), rm.matrix[row], settings.depth, settings)
        assert given[0].tolist() == nightly[row].tolist(), user
        if len(history) > 2:  # an item given twice counts at its latest place, as a stored history keeps it
            repeated = np.insert(history, len(history) - 1, history[1])
            again = adhoc.ease_list(model, repeated, len(rm.item_ids), rm.matrix[row], settings.depth, settings)
            moved = np.append(np.delete(history, 1)[:-1], [history[1], history[-1]])
            moved_row = adhoc.ease_list(model, moved, len(rm.item_ids), rm.matrix[row], settings.depth, settings)
            assert again[0].tolist() == moved_row[0].tolist(), user


def test_recency_places_count_distinct_items_from_the_latest():
    decay = lambda place: 0.5 + 0.5 * np.exp(-(place - 1))  # noqa: E731  tau 1, floor 0.5
    for history in ([4, 2, 4, 7], [2, 4, 4, 7]):
        row = adhoc.recency_history(np.array(history), 8, tau=1.0, floor=0.5)
        weights = dict(zip(row.indices.tolist(), row.data.tolist()))
        latest_first = list(dict.fromkeys(reversed(history)))  # distinct items, the latest first
        assert weights == pytest.approx({item: decay(place) for place, item in enumerate(latest_first, start=1)})
    flat = adhoc.recency_history(np.array([4, 2, 4, 7]), 8, tau=0.0, floor=0.5)
    assert sorted(flat.indices.tolist()) == [2, 4, 7] and flat.data.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("trust", [1.0, 0.5, 0.0])
def test_the_fused_score_is_each_routes_weighted_vote_with_the_two_tower_trust(trust):
    """Every listed item's fused score is the sum of its routes' weight / (c + rank), the
    two-tower route's weight times the trust; each route votes somewhere."""
    import torch

    split, rm = constructed_matrix()
    rng = np.random.default_rng(0)
    lm = rng.normal(size=(len(rm.item_ids), 8)).astype(np.float32)
    lm /= np.linalg.norm(lm, axis=1, keepdims=True)
    torch.manual_seed(0)
    model = two_tower.TwoTower(lm, two_tower.Architecture(dim=8, hidden=16, history_length=5))
    settings = RouteSettings(depth=30, popularity_discount=0.0, weights={
        "two_tower": 1.0, "ease": 1.0, "lm_profile": 0.3, "text_cf": 0.5})
    fitted = rm.matrix.multiply(np.arange(len(rm.item_ids)) >= 6).tocsr()  # items 0-5: new to TextCF
    fitted.eliminate_zeros()
    features = text_cf.item_features(lm)
    route = TextCFRoute.build(text_cf.fit_for_serving(fitted, rm.item_ids, features, 0.03, 0.5, "r"), features,
                              rm.item_ids)
    assert route.candidates.tolist() == [0, 1, 2, 3, 4, 5]
    history = split.filter(pl.col("user_id") == 35).sort("timestamp")["item_id"].to_numpy()
    merged = adhoc.history_recall(history, model, build_exact_index(two_tower.item_vectors(model)),
                                  build_exact_index(lm), lm, 20, settings, ease=fit_ease_route(rm, settings),
                                  text_cf=route, trust=trust)

    # each route's list, computed here from the inputs: the two vector routes by brute force
    # over every item not in the history, the EASE and TextCF routes by their own functions
    n_items, seen = len(rm.item_ids), set(history.tolist())
    window = np.full((1, model.architecture.history_length), -1, dtype=np.int64)
    window[0, -min(len(history), window.shape[1]):] = history[-window.shape[1]:]
    user = two_tower.user_vectors(model, window, np.full(window.shape, np.nan, np.float32))[0]
    profile = lm[history].mean(axis=0)

    def by_score(scores):
        return [int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable") if int(i) not in seen]

    history_row = sp.csr_matrix((np.ones(len(seen)), (np.zeros(len(seen), int), sorted(seen))), shape=(1, n_items))
    lists = {"two_tower": by_score(two_tower.item_vectors(model) @ user),
             "lm_profile": by_score(lm @ profile),
             "ease": [int(i) for i in adhoc.ease_list(fit_ease_route(rm, settings), history, n_items, history_row,
                                                       n_items, settings)[0] if i >= 0],
             "text_cf": [int(i) for i in text_cf_lists(route, history_row, np.zeros(1, int), n_items)[0] if i >= 0]}
    assert set(lists["text_cf"]) == set(range(6)) - seen  # only the items new to TextCF
    # the fused score by hand: sum over the routes listing the item of weight / (c + rank)
    expected = {}
    for name, items in lists.items():
        weight = settings.weights[name] * (trust if name == "two_tower" else 1.0)
        for rank, item in enumerate(items[:settings.depth], start=1):
            expected[item] = expected.get(item, 0.0) + weight / (settings.rrf_c + rank)

    listed = merged.items[0][merged.items[0] >= 0].tolist()
    assert len(listed) == 20 and len(set(listed)) == 20 and not set(listed) & seen
    np.testing.assert_allclose(merged.scores[0][:20], [expected[item] for item in listed], rtol=1e-5)
    # and they are the 20 best fused scores, best first (the default MMR lambda keeps the order)
    assert sorted(expected.values(), reverse=True)[:20] == pytest.approx(merged.scores[0][:20].tolist(), rel=1e-5)
    assert set(merged.route_ranks) == set(lists)
    for name, ranks in merged.route_ranks.items():  # each item's provenance: its rank in each route (0: not listed)
        routed = lists[name][:settings.depth]
        assert ranks[0][:20].tolist() == [routed.index(item) + 1 if item in routed else 0 for item in listed], name
    assert all(any(item in lists[name][:settings.depth] for item in listed) for name in lists)  # each route votes
