"""Choosing the fusion on validation: the vectorised fusion equals the served one, and on routes
whose answer is known the search finds it and the guard keeps a route that the fusion only ties."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import head_items
from recall_pipeline.core.recall import route_selection as rs
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings, merge_routes

N_ITEMS, N_USERS, DEPTH = 400, 300, 60
START = RouteSettings(depth=DEPTH)


def random_lists(rng, users=N_USERS, depth=DEPTH, n_items=N_ITEMS, pad=0.1) -> np.ndarray:
    lists = np.stack([rng.permutation(n_items)[:depth] for _ in range(users)])
    lists[rng.random(lists.shape) < pad] = -1
    return lists


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_top_k_is_the_served_fusion(seed):
    """The search scores exactly the lists merge_routes would serve (MMR lambda 1), for random
    lists, weights (0 included), RRF constants and popularity discounts."""
    rng = np.random.default_rng(seed)
    lists = {name: random_lists(rng, users=80) for name in ROUTES}
    counts = rng.integers(0, 50, N_ITEMS)
    weights = {name: float(rng.choice([0.0, 0.05, 0.5, 1.0, 2.0])) for name in ROUTES}
    c, discount = float(rng.choice([10.0, 60.0])), float(rng.choice([0.0, 0.1]))
    settings = RouteSettings(depth=DEPTH, weights=weights, rrf_c=c, popularity_discount=discount, mmr_lambda=1.0)
    served = merge_routes(lists, np.eye(N_ITEMS, dtype=np.float32), rs.K, settings, counts).items
    fast = rs.FusedTopK(lists, N_ITEMS).top(weights, c, rs.popularity_factors(counts, discount))
    np.testing.assert_array_equal(fast, served)


@pytest.mark.parametrize("ties", ["everywhere", "none"])
def test_fused_top_k_orders_ties_as_served(ties):
    """Equal weights and no discount tie many items at the 50th place (only the catalogue's tie
    order separates them: another tie seed changes the lists); distinct weights and item counts
    tie none (another seed changes nothing). Either way the search's top 50 are the served ones."""
    rng = np.random.default_rng(7)
    lists = {name: random_lists(rng, users=120, pad=0.0) for name in ROUTES}
    if ties == "everywhere":
        weights, counts, discount = {name: 1.0 for name in ROUTES}, np.zeros(N_ITEMS, dtype=np.int64), 0.0
    else:
        weights = dict(zip(ROUTES, (1.0, 0.7, 0.45, 0.3, 0.15, 0.05)))
        counts, discount = rng.permutation(N_ITEMS) + 1, 0.1
    settings = RouteSettings(depth=DEPTH, weights=weights, rrf_c=60.0, popularity_discount=discount, mmr_lambda=1.0)
    served = merge_routes(lists, np.eye(N_ITEMS, dtype=np.float32), rs.K, settings, counts).items
    factors = rs.popularity_factors(counts, discount)
    np.testing.assert_array_equal(rs.FusedTopK(lists, N_ITEMS).top(weights, 60.0, factors), served)
    reseeded = rs.FusedTopK(lists, N_ITEMS, seed=1).top(weights, 60.0, factors)
    changed = (reseeded != served).any(axis=1).mean()  # share of users whose lists another tie order changes
    assert changed > 0.1 if ties == "everywhere" else changed == 0


def relevant_matrix(rng, users=N_USERS, per_user=5) -> sp.csr_matrix:
    rows = np.repeat(np.arange(users), per_user)
    cols = np.concatenate([rng.choice(N_ITEMS, per_user, replace=False) for _ in range(users)])
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(users, N_ITEMS))


def informed(rng, relevant: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Random lists in which ``users`` find their relevant items at the top."""
    lists = random_lists(rng, pad=0.0)
    for user in users:
        hits = relevant[user].indices
        rest = [i for i in lists[user] if i not in set(hits)]
        lists[user] = np.r_[hits, rest][:DEPTH]
    return lists


def routes_of(lists: dict[str, np.ndarray], relevant, counts) -> rs.ValidationRoutes:
    ease = lists.pop("ease")
    return rs.ValidationRoutes(lists=lists, ease={rs.EaseVariant.of(START): ease}, relevant=relevant,
                               item_counts=counts, head=head_items(counts, np.arange(N_ITEMS)))


def test_one_informative_route_among_noise_dominates():
    rng = np.random.default_rng(3)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    lists = {name: random_lists(rng) for name in ("two_tower", "lm_profile", "lm_interest", "ease")}
    lists["text_cf"] = informed(rng, relevant, np.arange(N_USERS))
    selection = rs.select(routes_of(lists, relevant, counts), START)
    assert selection.best_route == "text_cf"
    weights = selection.settings.weights
    assert all(weights["text_cf"] > weights[name] for name in ("two_tower", "lm_profile", "lm_interest", "ease"))
    assert selection.chosen["recall@50"] == pytest.approx(1.0)


def test_two_complementary_routes_fuse_above_both():
    rng = np.random.default_rng(4)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    half = N_USERS // 2
    lists = {"ease": informed(rng, relevant, np.arange(half)),
             "two_tower": informed(rng, relevant, np.arange(half, N_USERS)),
             "lm_profile": random_lists(rng)}
    selection = rs.select(routes_of(lists, relevant, counts), START)
    assert selection.decision.startswith("fusion")
    assert selection.chosen["recall@50"] > max(f["recall@50"] for f in selection.routes.values()) + 0.3
    assert selection.settings.weights["ease"] > 0 and selection.settings.weights["two_tower"] > 0


def only_for(lists: np.ndarray, users: np.ndarray) -> np.ndarray:
    """``lists`` with no list for any user but ``users``."""
    out = np.full_like(lists, -1)
    out[users] = lists[users]
    return out


def test_a_route_keeps_its_weight_only_where_dropping_it_loses_beyond_the_noise():
    """EASE and the two-tower route each list (and find) what half the users want; the LM
    history route is noise at weight 0.5 and the interest route finds the relevant items of 2
    more users (a lead within the noise). Pruning drops both LM routes, keeps the two that
    complement each other, and says what it dropped."""
    rng = np.random.default_rng(6)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    half, last = np.arange(N_USERS // 2), np.arange(N_USERS - 2, N_USERS)
    rest = np.arange(N_USERS // 2, N_USERS - 2)
    lists = {"ease": only_for(informed(rng, relevant, half), half),
             "two_tower": only_for(informed(rng, relevant, rest), rest),
             "lm_profile": random_lists(rng), "lm_interest": informed(rng, relevant, last)}
    search = rs.Search(routes_of(lists, relevant, counts), START)
    weights = {**START.weights, "ease": 1.0, "two_tower": 1.0, "lm_profile": 0.5, "lm_interest": 0.05, "text_cf": 0.0}
    chosen = search.measure(dataclasses.replace(START, weights=weights))
    assert chosen.feasible
    pruned = search.pruned(chosen)
    assert pruned.settings.weights["lm_profile"] == 0.0 and pruned.settings.weights["lm_interest"] == 0.0
    assert pruned.settings.weights["ease"] == 1.0 and pruned.settings.weights["two_tower"] == 1.0
    assert pruned.figures.recall >= chosen.figures.recall - 2 / N_USERS
    assert sorted(note.split()[0] for note in search.pruning) == ["lm_interest", "lm_profile"]
    assert search.pruned(pruned) is pruned  # nothing more to drop: both halves lose beyond the noise


def test_the_served_fusion_carries_no_weight_for_a_noise_route():
    """TextCF lists (and finds) what half the users want, EASE finds what the other half want
    and lists random items for the first; the LM and two-tower routes are noise: whatever the
    ascent tried, the served settings give the noise routes no weight."""
    rng = np.random.default_rng(8)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    second, first = np.arange(N_USERS // 2), np.arange(N_USERS // 2, N_USERS)
    lists = {"ease": informed(rng, relevant, first),  # and random lists for the other users
             "text_cf": only_for(informed(rng, relevant, second), second),
             "lm_profile": random_lists(rng), "lm_interest": random_lists(rng), "two_tower": random_lists(rng)}
    selection = rs.select(routes_of(lists, relevant, counts), START)
    assert selection.decision.startswith("fusion")
    weights = selection.settings.weights
    assert weights["ease"] > 0 and weights["text_cf"] > 0
    assert weights["lm_profile"] == weights["lm_interest"] == weights["two_tower"] == 0.0
    pruned = {note.split()[0] for note in selection.record()["pruned_weights"]}
    assert pruned and all(weights[name] == 0.0 for name in pruned)  # the ascent had given them weight


def test_the_search_in_threads_tries_and_chooses_what_one_thread_does(monkeypatch):
    rng = np.random.default_rng(4)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    lists = {name: random_lists(rng) for name in ("two_tower", "lm_profile", "ease")}
    lists["text_cf"] = informed(rng, relevant, np.arange(N_USERS // 3))
    chosen = {}
    for threads in (1, 3):
        monkeypatch.setattr(rs, "ranking_threads", lambda: threads)
        selection = rs.select(routes_of(dict(lists), relevant, counts), START)
        chosen[threads] = (selection.settings, selection.decision, selection.candidates)
    assert len(chosen[1][2]) > 20  # a search that moved, not the start alone
    assert chosen[1] == chosen[3]


def test_a_fusion_within_the_noise_serves_the_best_route_alone():
    """Two copies of one route: no fusion can beat it, so the route serves alone (its weight 1,
    every other route 0 but popularity, no discount)."""
    rng = np.random.default_rng(5)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    good = informed(rng, relevant, np.arange(0, N_USERS, 2))
    selection = rs.select(routes_of({"ease": good, "two_tower": good.copy()}, relevant, counts), START)
    assert "alone" in selection.decision and selection.gain_lower <= 0
    served = selection.settings.weights
    route = selection.best_route if selection.best_route in ROUTES else "ease"
    assert served[route] == 1.0 and served["popularity"] == START.weights["popularity"]
    assert all(served[name] == 0.0 for name in ROUTES if name not in (route, "popularity"))
    assert selection.settings.popularity_discount == 0.0


def test_a_route_served_alone_leaves_the_ease_route_at_plain_ease():
    """The two-tower route alone (EASE noise): the EASE route's weight is 0 and its variant the
    plain one, so that the EASE model fitted and reported is not the start's recency variant."""
    rng = np.random.default_rng(5)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    good = informed(rng, relevant, np.arange(0, N_USERS, 2))
    routes = rs.ValidationRoutes(lists={"two_tower": good}, relevant=relevant, item_counts=counts,
                                 ease={rs.EaseVariant.of(START): random_lists(rng), rs.plain_ease(START): random_lists(rng)},
                                 head=head_items(counts, np.arange(N_ITEMS)))
    assert not rs.EaseVariant.of(START).plain
    selection = rs.select(routes, START)
    assert selection.decision.startswith("two_tower alone")
    assert selection.settings.weights["ease"] == 0.0
    assert rs.EaseVariant.of(selection.settings) == rs.plain_ease(START)


def placed(rng, relevant: sp.csr_matrix, users: np.ndarray, at: int) -> np.ndarray:
    """Random lists in which ``users`` find their relevant items from position ``at`` on."""
    lists = random_lists(rng, pad=0.0)
    for user in users:
        hits = relevant[user].indices
        rest = [i for i in lists[user] if i not in set(hits)]
        lists[user] = np.r_[rest[:at], hits, rest[at:]][:DEPTH]
    return lists


def test_the_ndcg_floor_is_set_by_the_best_top_among_routes_tied_on_recall():
    """The two-tower route finds the relevant items of two more users than EASE (the best route
    by Recall@50, within the noise) but low in its lists; EASE puts them first: the NDCG@10
    floor is 0.95x EASE's, not the two-tower route's. A route clearly behind on recall (the LM
    profile) is no contender."""
    rng = np.random.default_rng(8)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    lists = {"two_tower": placed(rng, relevant, np.arange(152), 40), "ease": placed(rng, relevant, np.arange(150), 0),
             "lm_profile": placed(rng, relevant, np.arange(100, 200), 0)}
    routes = routes_of(lists, relevant, counts)
    search = rs.Search(routes, START)
    ease = rs.EaseVariant.of(START).name
    assert search.best_route == "two_tower" and sorted(search.contenders) == sorted([ease, "two_tower"])
    assert search.singles[ease].ndcg > search.singles["two_tower"].ndcg
    assert search.floors[0] == pytest.approx(rs.NDCG_FLOOR * search.singles[ease].ndcg)
    assert rs.select(routes, START).floors["ndcg@10 set by"] == ease


def test_served_alone_the_route_with_the_better_top_among_those_tied_on_recall():
    """As above without a third route: no fusion beats the two-tower route (the fused lists find
    no more than it does), so one route serves alone. It is EASE: the two-tower route's two
    more users are within the noise, and EASE puts what it finds first."""
    rng = np.random.default_rng(8)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    lists = {"two_tower": placed(rng, relevant, np.arange(152), 40), "ease": placed(rng, relevant, np.arange(150), 0)}
    selection = rs.select(routes_of(lists, relevant, counts), START)
    ease = rs.EaseVariant.of(START).name
    assert selection.best_route == "two_tower"
    assert selection.decision.startswith(f"{ease} alone") and "two_tower does not beat it" in selection.decision
    assert selection.settings.weights["ease"] == 1.0 and selection.settings.weights["two_tower"] == 0.0
    assert selection.chosen["ndcg@10"] > selection.best_route_figures["ndcg@10"]


def test_the_ndcg_floor_must_hold_beyond_the_noise():
    """A candidate keeps the top when its per-user NDCG@10 stays at or above NDCG_FLOOR x the
    reference's at the lower confidence bound: 0.96x on the mean passes with little spread
    between users and fails with much (the same mean), and 0.95x exactly passes only without
    spread."""
    rng = np.random.default_rng(9)
    top = rng.uniform(0.2, 0.6, 2000)

    def fig(ndcg):
        return rs.Figures(0.0, float(ndcg.mean()), 0.0, 0.0, np.zeros(len(ndcg)), ndcg)

    assert rs.keeps_the_top(fig(top), fig(top)) and rs.keeps_the_top(fig(rs.NDCG_FLOOR * top), fig(top))
    steady = 0.96 * top + rng.normal(0.0, 0.01, len(top))
    noisy = 0.96 * top + rng.choice([-0.5, 0.5], len(top))
    noisy += 0.96 * top.mean() - noisy.mean()  # the same mean as steady's, to the last digit
    steady += 0.96 * top.mean() - steady.mean()
    assert rs.keeps_the_top(fig(steady), fig(top)) and not rs.keeps_the_top(fig(noisy), fig(top))
    assert not rs.keeps_the_top(fig(rs.NDCG_FLOOR * top - 0.001), fig(top))


def test_paired_gain_bounds_the_noise():
    rng = np.random.default_rng(6)
    single = rng.random(500)
    assert rs.paired_gain(single, single) == (0.0, 0.0)
    mean, lower = rs.paired_gain(single + 0.05, single)
    assert mean == pytest.approx(0.05) and lower == pytest.approx(0.05)
    noisy = single + rng.normal(0.0, 0.3, 500)
    mean, lower = rs.paired_gain(noisy, single)
    assert lower < mean and lower < 0.0 < mean + 0.05


def test_the_ease_variants_always_include_plain_ease():
    start = RouteSettings()
    variants = rs.ease_variants(start, lam=400.0)
    assert variants[0] == rs.EaseVariant.of(start) and len(variants) == 5
    assert rs.plain_ease(start, 400.0) == rs.EaseVariant(400.0, 0.0, 0.1, 0, 0.0) in variants
    assert {(v.recency_tau > 0, v.window_weight > 0) for v in variants if v.lam == 400.0} == {
        (True, True), (True, False), (False, True), (False, False)}
    plain = dataclasses.replace(start, ease_recency_tau=0.0, ease_window_weight=0.0)
    assert rs.ease_variants(plain) == [rs.plain_ease(plain)]


def test_selection_rows_are_seeded_and_capped():
    rng = np.random.default_rng(7)
    keep = np.where(np.arange(50) % 5, 1.0, 0.0)  # every fifth user has nothing held out
    holdout = (sp.diags(keep) @ relevant_matrix(rng, users=50)).tocsr()
    holdout.eliminate_zeros()
    everyone = rs.selection_rows(holdout)
    assert everyone.tolist() == [r for r in range(50) if r % 5]
    capped = rs.selection_rows(holdout, max_users=10)
    assert len(capped) == 10 and set(capped) <= set(everyone) and (np.diff(capped) > 0).all()
    assert capped.tolist() == rs.selection_rows(holdout, max_users=10).tolist()
    assert len(rs.selection_rows(holdout, max_cells=20 * N_ITEMS)) == 20


def test_a_version_without_trust_is_never_served_alone():
    """At trust 0 the two-tower route has no say in the served lists: even when its validation
    lists are the best, the route served alone is the best of the others."""
    rng = np.random.default_rng(8)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    lists = {"two_tower": informed(rng, relevant, np.arange(N_USERS)), "ease": informed(rng, relevant, np.arange(20))}
    trusted_model = rs.select(routes_of(dict(lists), relevant, counts), START, trust=1.0)
    assert trusted_model.best_route == "two_tower"
    untrusted = rs.select(routes_of(dict(lists), relevant, counts), START, trust=0.0)
    assert untrusted.best_route.startswith("ease[")
    assert untrusted.chosen["recall@50"] < trusted_model.chosen["recall@50"]
    # its weight is not searched either: every candidate keeps the starting weight
    assert {c["weight_two_tower"] for c in untrusted.candidates} == {START.weights["two_tower"]}


def test_without_held_out_users_the_starting_point_serves():
    rng = np.random.default_rng(9)
    empty = sp.csr_matrix((0, N_ITEMS))
    routes = rs.ValidationRoutes(lists={}, ease={rs.EaseVariant.of(START): np.zeros((0, DEPTH), dtype=np.int64)},
                                 relevant=empty, item_counts=rng.integers(1, 30, N_ITEMS),
                                 head=np.zeros(N_ITEMS, dtype=bool))
    selection = rs.select(routes, START)
    assert selection.settings == START and "no held-out user" in selection.decision and selection.users == 0


def test_score_is_what_the_search_measures_and_reads_variants_kept_apart():
    rng = np.random.default_rng(8)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    lists = {name: random_lists(rng) for name in ("two_tower", "lm_profile", "ease")}
    routes = routes_of(lists, relevant, counts)
    settings = RouteSettings(depth=DEPTH, weights={**START.weights, "lm_profile": 0.5}, popularity_discount=0.1)
    measured = rs.Search(routes, START).measure(settings).figures
    assert rs.score(routes, settings).as_dict() == measured.as_dict()
    np.testing.assert_array_equal(rs.score(routes, settings).per_user_recall, measured.per_user_recall)
    other = dataclasses.replace(START, ease_lambda=START.ease_lambda * 2)
    with pytest.raises(ValueError, match="no validation lists"):
        rs.score(routes, other)
    kept_apart = dataclasses.replace(routes, extra_ease={rs.EaseVariant.of(other): random_lists(rng)})
    assert 0.0 <= rs.score(kept_apart, other).recall <= 1.0


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("more_users", [1, 90])
def test_ease_terms_serve_only_where_they_beat_plain_ease_beyond_the_noise(fused, more_users):
    """The start's EASE variant (recency weighting and the windowed term) finds what plain EASE
    finds and, for ``more_users`` more users, their relevant items too. For one user that lead
    is within the noise: plain EASE serves, in the fusion (the two-tower route finding what the
    other users want: the fusion beats both) or alone (the other routes noise), and the record
    says why; for 90 users it is not, and the variant serves."""
    rng = np.random.default_rng(5)
    relevant, counts = relevant_matrix(rng), rng.integers(1, 30, N_ITEMS)
    plain = informed(rng, relevant, np.arange(100))
    windowed, extra = plain.copy(), np.arange(100, 100 + more_users)
    windowed[extra] = informed(rng, relevant, extra)[extra]
    two_tower = informed(rng, relevant, np.arange(220, N_USERS)) if fused else random_lists(rng)
    routes = rs.ValidationRoutes(lists={"two_tower": two_tower, "lm_profile": random_lists(rng)},
                                 ease={rs.EaseVariant.of(START): windowed, rs.plain_ease(START): plain},
                                 relevant=relevant, item_counts=counts, head=head_items(counts, np.arange(N_ITEMS)))
    selection = rs.select(routes, START)
    assert selection.best_route == rs.EaseVariant.of(START).name  # the best route alone, by its mean
    served = rs.EaseVariant.of(selection.settings)
    assert served == (rs.plain_ease(START) if more_users == 1 else rs.EaseVariant.of(START))
    if more_users == 1 and fused:
        assert selection.decision.startswith("fusion")
        assert any(note.endswith(f"{rs.plain_ease(START).name} kept") for note in selection.record()["ease_variant_notes"])
    if more_users == 1 and not fused:
        assert selection.decision.startswith(f"{rs.plain_ease(START).name} alone")
        assert "does not beat it beyond the noise" in selection.decision
