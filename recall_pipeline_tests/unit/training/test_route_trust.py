"""The two-tower route's trust factor: chosen on the validation cut, it keeps a model that helps
at full weight and turns down one whose lists only push the EASE route's hits out."""

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings, merge_routes
from recall_pipeline.core.training import route_trust

N_CLUSTERS, PER_CLUSTER, FIT, HELD = 4, 100, 25, 10


def clustered_cut(n_users: int = 40, seed: int = 0):
    """Users who take up items of one cluster only: 25 in the fit part, 10 more held out (the
    relevant ones); EASE learns the clusters, and finds some of the 75 candidates' 10."""
    rng = np.random.default_rng(seed)
    rows, held = [], np.zeros((n_users, N_CLUSTERS * PER_CLUSTER))
    cluster = np.arange(n_users) % N_CLUSTERS
    for user in range(n_users):
        items = cluster[user] * PER_CLUSTER + rng.permutation(PER_CLUSTER)[:FIT + HELD]
        rows += [(user, int(item), 4.0, day) for day, item in enumerate(items[:FIT])]
        held[user, items[FIT:]] = 1.0
    split = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    fit = build_rating_matrix(split.with_columns(part=pl.lit("train")), np.arange(N_CLUSTERS * PER_CLUSTER))
    vectors = rng.standard_normal((N_CLUSTERS * PER_CLUSTER, 8)).astype(np.float32)
    return fit, sp.csr_matrix(held), cluster, vectors


def test_a_model_that_finds_the_held_out_items_keeps_full_weight():
    fit, held, _, vectors = clustered_cut()
    oracle = lambda rows: held[rows].toarray() + 1e-3 * np.arange(held.shape[1])  # noqa: E731
    trust = route_trust.two_tower_trust(oracle, fit, held, vectors)
    assert trust.factor == 1.0
    assert trust.recall[1.0] > trust.recall[0.0] + 0.1 and trust.users == 40


def test_a_model_whose_lists_only_hurt_is_turned_down():
    fit, held, cluster, vectors = clustered_cut()
    item_cluster = np.arange(held.shape[1]) // PER_CLUSTER
    # proposes the other clusters' items: never relevant, and in the lists they displace EASE's
    wrong = lambda rows: (item_cluster[None, :] != cluster[rows][:, None]).astype(float)  # noqa: E731
    trust = route_trust.two_tower_trust(wrong, fit, held, vectors)
    assert trust.recall[1.0] < trust.recall[0.5] < trust.recall[0.0] - 0.1  # the more say, the worse
    assert trust.factor == 0.0


def test_a_lower_factor_must_win_by_more_than_the_margin():
    # the bundled data's figures: 0.25 wins by 0.004, within the noise: the model keeps full weight
    assert route_trust.chosen_factor({0.0: 0.349, 0.25: 0.363, 0.5: 0.362, 0.75: 0.362, 1.0: 0.359}) == 1.0
    # a weak model (the L run's): turned down to the largest factor near the best
    assert route_trust.chosen_factor({0.0: 0.22, 0.25: 0.215, 0.5: 0.15, 0.75: 0.08, 1.0: 0.03}) == 0.25
    assert route_trust.chosen_factor({0.0: 0.22, 0.25: 0.2, 0.5: 0.15, 0.75: 0.08, 1.0: 0.03}) == 0.0


def test_the_trust_scales_only_the_two_tower_weight():
    settings = RouteSettings()
    scaled = route_trust.trusted(settings, 0.25)
    assert scaled.weights["two_tower"] == settings.weights["two_tower"] * 0.25
    assert {k: v for k, v in scaled.weights.items() if k != "two_tower"} == \
        {k: v for k, v in settings.weights.items() if k != "two_tower"}
    assert route_trust.trusted(settings, 1.0) is settings


def test_the_two_tower_route_served_alone_keeps_its_weight_whatever_the_trust():
    """A fusion is served trusted; the two-tower route alone is served as it is (at trust 0 a
    scaled weight would leave the users with history without a list)."""
    fused = RouteSettings()
    assert route_trust.served(fused, 0.0).weights["two_tower"] == 0.0
    alone = RouteSettings(weights={name: 0.0 for name in ROUTES} | {"two_tower": 1.0, "popularity": 1.0})
    assert route_trust.served(alone, 0.0) is alone and route_trust.served(alone, 0.5) is alone
    lists = {name: np.array([[-1, -1]]) for name in ROUTES} | {"two_tower": np.array([[4, 2]])}
    assert merge_routes(lists, np.eye(6, dtype=np.float32), 2, route_trust.served(alone, 0.0)).items.tolist() == [[4, 2]]
