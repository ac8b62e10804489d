"""Recall routes, their fusion and MMR, on constructed data."""

from datetime import datetime

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall_pipeline.core.recall.list_rows import lists_from_frame, vectors_by_user
from recall_pipeline.core.recall.fusion import gather, mmr, rank_matrix, reciprocal_rank_fusion
from recall_pipeline.core.ids import CatalogueMismatchError
from recall_pipeline.core.recall.index import build_exact_index
from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.recall.published_tables import candidates_frame
from recall_pipeline.core.recall.routes import RouteSettings, ease_route_scorer, merge_routes, route_lists

T = datetime(2020, 1, 1)


def small_world():
    split = pl.DataFrame(
        [(1, 10, 5.0, T, "train"), (2, 10, 4.0, T, "train"), (2, 11, 4.0, T, "train"),
         (3, 12, 4.0, T, "warm_test")],  # user 3 has no training history
        schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")
    rm = build_rating_matrix(split, np.array([10, 11, 12, 13]))
    profiles = np.array([[1, 0.5, 0.2, 0.1], [0.9, 0.8, 0.1, 0.2]], dtype=np.float32)
    return rm, np.eye(4, dtype=np.float32), profiles


def test_routes_exclude_history_and_newcomers_get_popularity():
    rm, vectors, profiles = small_world()
    lists = route_lists(build_exact_index(vectors), rm.item_ids, rm, np.array([1, 2]), profiles,
                        np.array([1, 1, 2]), np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.float32),
                        RouteSettings(depth=3, compute_zero_weight_routes=True))
    assert lists["lm_profile"].tolist() == [[1, 2, 3], [3, 2, -1], [-1, -1, -1]]
    assert lists["lm_interest"][0].tolist()[:2] == [2, 3] and lists["lm_interest"][1].tolist()[0] == 3
    assert lists["popularity"][2].tolist()[:2] == [0, 1] and (lists["popularity"][:2] == -1).all()
    for name, route in lists.items():  # nobody is offered an item of their own training history
        assert 0 not in route[0].tolist() and not {0, 1} & set(route[1].tolist()), name
    merged = merge_routes(lists, vectors, k=2, settings=RouteSettings(depth=3, mmr_lambda=1.0))
    frame = candidates_frame(rm, merged)
    assert frame.filter(pl.col("user_id") == 3)["route"].to_list() == ["popularity", "popularity"]
    assert (lists_from_frame(rm, frame)[:, :2] == merged.items).all()  # the stored form round-trips
    assert set(frame.filter(pl.col("user_id") == 2)["item_id"]) == {12, 13}  # all it has not seen
    rank_columns = [f"rank_{name}" for name in lists]
    assert frame.select(pl.any_horizontal(pl.col(rank_columns).is_not_null()).all()).item()  # provenance
    top = frame.filter((pl.col("user_id") == 1) & (pl.col("rank") == 1)).row(0, named=True)
    assert top["rank_" + top["route"]] is not None  # the primary route did propose it


def test_a_route_fused_with_weight_0_is_not_computed_and_changes_no_list():
    rm, vectors, profiles = small_world()
    interests = (np.array([1, 1, 2]), np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.float32))
    weights = {"two_tower": 1.0, "ease": 1.0, "lm_profile": 0.0, "lm_interest": 0.0, "popularity": 1.0,
               "text_cf": 0.0}
    merged = {}
    for provenance in (False, True):
        settings = RouteSettings(depth=3, weights=weights, compute_zero_weight_routes=provenance)
        lists = route_lists(build_exact_index(vectors), rm.item_ids, rm, np.array([1, 2]), profiles, *interests,
                            settings)
        assert (lists["lm_profile"] >= 0).any() == (lists["lm_interest"] >= 0).any() == provenance
        assert (lists["ease"][:2] >= 0).any()  # a route that votes is always computed
        merged[provenance] = merge_routes(lists, vectors, k=2, settings=settings)
    assert merged[False].items.tolist() == merged[True].items.tolist()
    assert merged[False].scores.tolist() == merged[True].scores.tolist()
    assert merged[True].route_ranks["lm_profile"].any() and not merged[False].route_ranks["lm_profile"].any()


def test_an_index_over_another_catalogue_is_refused():
    rm, vectors, profiles = small_world()
    with pytest.raises(CatalogueMismatchError, match="FAISS index"):
        route_lists(build_exact_index(vectors), np.array([10, 11, 12, 99]), rm, np.array([1]), profiles[:1],
                    np.array([]), np.zeros((0, 4), np.float32))
    with pytest.raises(CatalogueMismatchError, match="1 profile users"):
        vectors_by_user(rm, np.array([7]), np.ones((1, 3)))


def test_reciprocal_rank_fusion_rewards_agreement_and_weights():
    a = np.array([[0, 1, 2]])
    b = np.array([[1, 3, -1]])
    fused = reciprocal_rank_fusion({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, k=4, n_items=5, c=1.0)
    # item 1: 1/(1+2) + 1/(1+1) beats item 0: 1/(1+1)
    assert fused.items[0].tolist() == [1, 0, 3, 2]
    assert fused.scores[0, 0] == pytest.approx(1 / 3 + 1 / 2)
    assert gather(rank_matrix(b, 5), fused.items)[0].tolist() == [1, 0, 2, 0]
    heavy_a = reciprocal_rank_fusion({"a": a, "b": b}, {"a": 10.0, "b": 1.0}, k=4, n_items=5, c=1.0)
    assert heavy_a.items[0].tolist()[:3] == [0, 1, 2]


def test_mmr_lambda_one_is_pure_relevance_and_lower_lambda_diversifies():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16))
    vectors = np.vstack([base[i % 3] + 0.05 * rng.normal(size=16) for i in range(30)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    # relevance favours the first cluster heavily: items 0, 3, 6, ... are near-duplicates
    order = np.array([i for i in range(0, 30, 3)] + [i for i in range(30) if i % 3])
    items, scores = order[None, :], np.linspace(1, 0, 30)[None, :]
    assert (mmr(items, scores, vectors, 10, lam=1.0)[0] == order[:10]).all()

    def mean_similarity(lists):
        v = vectors[lists[0]]
        s = v @ v.T
        return s[np.triu_indices(len(v), 1)].mean()

    diverse = mmr(items, scores, vectors, 10, lam=0.5)
    assert mean_similarity(diverse) < mean_similarity(mmr(items, scores, vectors, 10, lam=1.0)) - 0.2
    assert len(set(diverse[0].tolist())) == 10


def test_popularity_discount_lets_a_less_popular_item_overtake():
    from recall_pipeline.core.recall.routes import popularity_weights

    # route lists: item 0 first, item 1 second for the one user; item 0 is far more popular
    lists = {"two_tower": np.array([[0, 1, 2]]), "ease": np.array([[0, 1, 2]])}
    vectors = np.eye(3, dtype=np.float32)
    counts = np.array([1000, 2, 1])
    plain = merge_routes(lists, vectors, 3, RouteSettings(depth=3, popularity_discount=0.0, mmr_lambda=1.0),
                         counts)
    assert plain.items[0].tolist() == [0, 1, 2]  # discount 0: fusion order kept
    assert merge_routes(lists, vectors, 3, RouteSettings(depth=3, popularity_discount=0.0, mmr_lambda=1.0)
                        ).items[0].tolist() == [0, 1, 2]  # no counts: no discount
    discounted = merge_routes(lists, vectors, 3, RouteSettings(depth=3, popularity_discount=0.2, mmr_lambda=1.0),
                              counts)
    # fused 2/61, 2/62, 2/63 times 1001^-0.2, 3^-0.2, 2^-0.2: the least popular item leads
    assert discounted.items[0].tolist() == [2, 1, 0]
    assert popularity_weights(counts, 0.0).tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(popularity_weights(np.array([3]), 0.5), [0.5])


def test_text_cf_route_proposes_only_items_untrained_at_fit_less_the_users_own():
    """Items 12 and 13 had no training interaction when TextCF was fitted; user 2 has since
    interacted with 13 (a feedback refresh's matrix): only 12 is left for them, and the newcomer
    (user 3, no history) gets no list from this route."""
    from recall_pipeline.core.recall.routes import TextCFRoute, text_cf_route
    from recall_pipeline.core.training import text_cf

    rm, vectors, _ = small_world()
    features = text_cf.item_features(vectors)
    model = text_cf.fit_for_serving(rm.matrix, rm.item_ids, features, 0.03, 0.5, "fit")
    assert model.untrained_ids.tolist() == [12, 13]
    route = TextCFRoute.build(model, features, rm.item_ids)
    both = text_cf_route(route, rm, np.array([0, 1]), depth=3)
    assert [set(row[:2]) for row in both.tolist()] == [{2, 3}, {2, 3}] and (both[:, 2] == -1).all()
    later = rm.matrix.tolil()
    later[1, 3] = 4.0
    moved = type(rm)(later.tocsr(), rm.user_ids, rm.item_ids)
    assert text_cf_route(route, moved, np.array([1]), depth=3).tolist() == [[2, -1, -1]]
    lists = route_lists(build_exact_index(vectors), rm.item_ids, rm, np.array([1, 2]), np.eye(4, dtype=np.float32)[:2],
                        np.array([]), np.zeros((0, 4), np.float32), RouteSettings(depth=3), text_cf=route)
    assert lists["text_cf"][2].tolist() == [-1, -1, -1] and set(lists["text_cf"][0][:2]) == {2, 3}


def test_the_text_cf_route_ranks_its_items_by_the_lm_view_the_run_chose():
    """With the interest view chosen (on pseudo-cold validation), the route ranks the untrained
    items by the user's best interest vector, not by TextCF: user 1's two interests read like
    item 13 and (less) 12, so 13 leads; with the profile view, user 1's profile (toward 12)
    leads with 12. Without the chosen view's vectors the route refuses, rather than guess."""
    from dataclasses import replace

    from recall_pipeline.core.recall.routes import LMView, TextCFRoute, text_cf_route
    from recall_pipeline.core.training import text_cf

    rm, vectors, _ = small_world()
    features = text_cf.item_features(vectors)
    model = text_cf.fit_for_serving(rm.matrix, rm.item_ids, features, 0.03, 0.5, "fit", cold_scorer="lm_interest")
    route = TextCFRoute.build(model, features, rm.item_ids)
    interests = LMView(np.array([0, 0]), np.array([[0, 0, 0.3, 0], [0, 0, 0, 0.9]], np.float32))
    profile = LMView(np.array([0]), np.array([[0, 0, 0.8, 0.1]], np.float32))
    views = {"lm_interest": interests, "lm_profile": profile}
    assert text_cf_route(route, rm, np.array([0]), depth=2, views=views).tolist() == [[3, 2]]
    by_profile = TextCFRoute.build(replace(model, cold_scorer="lm_profile"), features, rm.item_ids)
    assert text_cf_route(by_profile, rm, np.array([0]), depth=2, views=views).tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="lm_interest"):
        text_cf_route(route, rm, np.array([0]), depth=2)
    lists = route_lists(build_exact_index(vectors), rm.item_ids, rm, np.array([1]), profile.vectors,
                        np.array([1, 1]), interests.vectors, RouteSettings(depth=2), text_cf=route)
    assert lists["text_cf"][0].tolist() == [3, 2]  # the nightly lists pass the users' views


@pytest.mark.parametrize("scorer", ["text_cf", "lm_profile", "lm_interest"])
def test_a_text_cf_route_over_its_index_lists_what_scoring_every_cold_item_lists(monkeypatch, scorer):
    """Many users search an exact index of the cold items: the same lists as scoring every cold
    item, for each cold scorer; an item a user has taken since the fit is not offered to them,
    and a user without a vector in the chosen view gets no list from the index."""
    from dataclasses import replace

    from recall_pipeline.core.recall import routes
    from recall_pipeline.core.training import text_cf

    rng = np.random.default_rng(3)
    n_users, n_items, trained = 40, 400, 100
    train = sp.random(n_users, trained, density=0.2, random_state=4, format="csr", data_rvs=lambda n: np.full(n, 4.0))
    train = sp.hstack([train, sp.csr_matrix((n_users, n_items - trained))]).tocsr()
    vectors = rng.normal(size=(n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    features, item_ids = text_cf.item_features(vectors), np.arange(n_items) * 10
    model = replace(text_cf.fit_for_serving(train, item_ids, features, 0.03, 0.5, "fit"), cold_scorer=scorer)
    owners = np.concatenate([np.arange(1, n_users), np.arange(1, n_users, 3)])  # user 0 has no vector
    views = {"lm_profile": routes.LMView(np.arange(1, n_users), rng.normal(size=(n_users - 1, 8)).astype(np.float32)),
             "lm_interest": routes.LMView(owners, rng.normal(size=(len(owners), 8)).astype(np.float32))}
    rows = np.arange(n_users)
    monkeypatch.setattr(routes, "INDEXED_MIN_USERS", 10)
    scored = routes.TextCFRoute.build(model, features, item_ids, 9)  # too few users: scored
    indexed = routes.TextCFRoute.build(model, features, item_ids, n_users)
    assert scored.index is None and indexed.index is not None and indexed.index.ntotal == n_items - trained
    first = routes.text_cf_lists(scored, train, rows, 20, views=views)[[1, 2], 0]
    later = train.tolil()
    later[1, first[0]] = later[2, first[1]] = 4.0  # their first cold items, taken since the fit
    later = later.tocsr()
    exact = routes.text_cf_lists(scored, later, rows, 20, views=views)
    found = routes.text_cf_lists(indexed, later, rows, 20, views=views)
    with_vector = slice(0 if scorer == "text_cf" else 1, None)
    assert first[0] not in found[1] and first[1] not in found[2] and (found[with_vector, 0] >= trained).all()
    np.testing.assert_array_equal(found[with_vector], exact[with_vector])
    if scorer != "text_cf":
        assert (found[0] == -1).all()


@pytest.mark.parametrize("cells", [10**9, 600, 1])
def test_interest_scorer_is_each_users_best_interest_whatever_the_product_size(monkeypatch, cells):
    """Batched products (any size, down to one interest at a time) give each item its best
    interest's score, users without interests 0, rows in the order asked."""
    from recall_pipeline.core.recall import routes

    rng = np.random.default_rng(0)
    n_users, n_items = 50, 300
    owners = rng.integers(0, n_users, 120)
    owners = owners[owners % 7 != 0]  # users 0, 7, 14, ... have no interest
    vectors = rng.normal(size=(len(owners), 8)).astype(np.float32)
    items = rng.normal(size=(n_items, 8)).astype(np.float32)
    rows = rng.permutation(n_users)[:40]
    expected = np.array([(vectors[owners == r] @ items.T).max(axis=0) if (owners == r).any() else np.zeros(n_items)
                         for r in rows])
    monkeypatch.setattr(routes, "INTEREST_CELLS", cells)
    np.testing.assert_allclose(routes.interest_scorer(n_users, owners, vectors, items)(rows), expected, atol=1e-5)


def test_the_ease_route_favours_what_goes_with_the_latest_interaction():
    """Items 10 and 11 go with 12 and 13 respectively, equally often; a user who saw 10 long ago
    and 11 last is offered 13 before 12 by the recency-weighted route, a tie without recency."""
    rows = [(u, item, 4.0, datetime(2020, 1, 1 + n), "train")
            for u in range(1, 9) for n, item in enumerate((10, 12) if u <= 4 else (11, 13))]
    rows += [(99, 10, 4.0, datetime(2020, 1, 1), "train"), (99, 11, 4.0, datetime(2020, 3, 1), "train")]
    rows += [(98, 11, 4.0, datetime(2020, 1, 1), "train"), (98, 10, 4.0, datetime(2020, 3, 1), "train")]
    rm = build_rating_matrix(pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "part"],
                                          orient="row"), np.array([10, 11, 12, 13]))
    me, other = np.searchsorted(rm.user_ids, [99, 98])
    scores = ease_route_scorer(rm, RouteSettings(ease_lambda=1.0))(np.array([me, other]))
    assert scores[0, 3] > scores[0, 2] and scores[1, 2] > scores[1, 3]
    flat = ease_route_scorer(rm, RouteSettings(ease_lambda=1.0, ease_recency_tau=0.0))(np.array([me, other]))
    assert flat[0, 3] == pytest.approx(flat[0, 2]) and flat[1, 2] == pytest.approx(flat[1, 3])
    lists = route_lists(build_exact_index(np.eye(4, dtype=np.float32)), rm.item_ids, rm, rm.user_ids,
                        np.ones((len(rm.user_ids), 4), np.float32), np.array([]), np.zeros((0, 4), np.float32),
                        RouteSettings(depth=2, ease_lambda=1.0))
    assert lists["ease"][me].tolist() == [3, 2] and lists["ease"][other].tolist() == [2, 3]


def test_a_capped_ease_model_ranks_its_columns_as_the_whole_catalogue_ranking_would():
    """A capped EASE model scores only its columns: the route ranks those alone, and its lists
    are those of ranking every item (the others at -inf), ties included. Integer weights make
    many scores equal, so the catalogue's tie order decides much of each list."""
    from recall_pipeline.core.training.ease.model import EaseModel
    from recall_pipeline.core.features.rating_matrix import RatingMatrix
    from recall_pipeline.core.recall.ranking import top_k_scored
    from recall_pipeline.core.recall.routes import ease_route

    rng = np.random.default_rng(4)
    n_users, n_items = 40, 60
    matrix = sp.random(n_users, n_items, density=0.15, format="csr", random_state=5, data_rvs=lambda n: np.ones(n))
    rm = RatingMatrix(matrix, np.arange(n_users), np.arange(n_items))
    columns = np.sort(rng.choice(n_items, 25, replace=False))
    model = EaseModel(1.0, n_items, weights=rng.integers(0, 2, (25, 25)).astype(np.float64), columns=columns)
    rows = np.flatnonzero(np.diff(matrix.indptr) > 0)[::2]
    for seed in range(3):
        settings = RouteSettings(depth=24, ease_recency_tau=0.0, seed=seed)  # 25 columns: short lists
        whole, _ = top_k_scored(ease_route_scorer(rm, settings, model), rows, 24, n_items, rm.matrix, seed)
        lists = ease_route(rm, settings, rows, model)
        assert np.array_equal(lists, whole)
        assert set(lists[lists >= 0]) <= set(columns)
        assert (lists == -1).any() and (lists >= 0).sum() > 5 * len(rows)  # short lists are padded alike
