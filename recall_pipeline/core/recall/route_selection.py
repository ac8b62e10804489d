"""Choosing the fusion on the run's own validation cut, and never serving worse than its best route.

Every full run ranks each route alone on the validation cut (``validation_routes``: routes
fitted on the fit part, scored on the held-out part, a seeded sample of users), then searches
the fusion settings by **coordinate ascent** from a starting point (today's defaults unless
configured): one setting at a time (which EASE variant, each route's weight, the popularity
discount, the RRF constant), every value of its grid tried with the others held, the best kept
if it gains more than ``MIN_GAIN`` validation Recall@50 (an EASE variant with recency weighting or
the windowed term only if it beats plain EASE beyond the noise: :meth:`Search.plain_unless_beaten`);
passes repeat until one changes nothing or the time budget ends. Then each route must earn its
weight: a route whose weight can go to 0 without a loss of Recall@50 beyond the noise (and
without losing a floor or the reach) is dropped, the cheapest first, until none can be
(:meth:`Search.pruned`). A candidate counts only if its lists keep NDCG@10 at least
``NDCG_FLOOR`` x the best single route's beyond the noise (:func:`keeps_the_top`; the best of
the routes whose Recall@50 the best route does not beat beyond the noise: :func:`contenders`),
and coverage@50 and long-tail share@50 at least plain EASE's (the same users, this run's
validation figures): the fusion may not buy recall with the top of the list, nor reach less of
the catalogue than collaborative filtering alone. Among those,
candidates whose coverage@50 reaches ``COVERAGE_VS_PLAIN_EASE`` x plain EASE's come first (a
reach target; when none does, or the ones that do lose the guard below, the best of the others
serves). Coordinate ascent is explainable, deterministic and needs ~100 evaluations; a fused list
is the same arithmetic as ``fusion.reciprocal_rank_fusion`` (tested equal), vectorised over the
users.

Then the guard: the chosen fusion's per-user Recall@50 is compared with the best single route's
on the same users by a paired bootstrap (``BOOTSTRAP`` resamples of the users, seeded). Unless
the fusion is better at ``CONFIDENCE`` (the resampled mean gain's lower quantile above 0), the
run serves that route alone (plain EASE where that route is an EASE variant that does not beat
it beyond the noise), and says so. The test split is never read here.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import (
    BOOTSTRAP_RESAMPLES, bootstrap_means, catalogue_coverage, hit_matrix, long_tail_share, ndcg_at_k, recall_at_k,
    relevant_counts,
)
from recall_pipeline.core.recall.ranking import ranking_threads, tie_order
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings, popularity_weights
from recall_pipeline.core.training.route_trust import trusted

K, NDCG_K = 50, 10
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
DISCOUNT_GRID = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
RRF_C_GRID = (10.0, 30.0, 60.0, 120.0)
MIN_GAIN = 1e-4
MAX_PASSES = 3
NDCG_FLOOR = 0.95
# The lists' reach: coverage@50 at least this many times plain EASE's (no recency, no windowed
# term) on the same validation users. A product choice (the recall stage is to reach well beyond
# what collaborative filtering alone reaches): on the bundled data's validation cut 2.5x costs
# about one standard error of Recall@50 for 1.6x the coverage (bench/tuning/coverage_floor.py);
# 0: no target. route_settings config coverage_vs_plain_ease sets it per deployment.
COVERAGE_VS_PLAIN_EASE = 2.5
BOOTSTRAP, CONFIDENCE = BOOTSTRAP_RESAMPLES, 0.95  # the evaluation's comparisons resample as many
DEFAULT_MAX_USERS = 2_000
DEFAULT_MAX_CELLS = 2_000_000_000


@dataclass(frozen=True)
class EaseVariant:
    """How the EASE route scores on the validation cut: its regularisation, recency weighting
    (tau 0: none) and windowed term (weight 0: none)."""

    lam: float
    recency_tau: float
    recency_floor: float
    window: int
    window_weight: float

    @classmethod
    def of(cls, settings: RouteSettings) -> EaseVariant:
        term = settings.ease_window > 0 and settings.ease_window_weight > 0  # else no term: window 0
        return cls(settings.ease_lambda, settings.ease_recency_tau, settings.ease_recency_floor,
                   settings.ease_window if term else 0, settings.ease_window_weight if term else 0.0)

    def applied(self, settings: RouteSettings) -> RouteSettings:
        return dataclasses.replace(settings, ease_lambda=self.lam, ease_recency_tau=self.recency_tau,
                                   ease_recency_floor=self.recency_floor, ease_window=self.window,
                                   ease_window_weight=self.window_weight)

    @property
    def plain(self) -> bool:
        """Plain EASE: no recency weighting, no windowed term."""
        return self.recency_tau <= 0 and self.window_weight <= 0

    @property
    def name(self) -> str:
        recency = f"recency {self.recency_tau:g}/{self.recency_floor:g}" if self.recency_tau > 0 else "no recency"
        window = f"window {self.window}x{self.window_weight:g}" if self.window_weight > 0 else "no window"
        return f"ease[lambda {self.lam:g}, {recency}, {window}]"


def plain_ease(start: RouteSettings, lam: float | None = None) -> EaseVariant:
    """The EASE route without recency weighting or windowed term (plain EASE), at ``lam``
    (default the starting point's)."""
    return dataclasses.replace(EaseVariant.of(start), lam=start.ease_lambda if lam is None else float(lam),
                               recency_tau=0.0, window=0, window_weight=0.0)


def ease_variants(start: RouteSettings, lam: float | None = None) -> list[EaseVariant]:
    """The starting point's EASE route, and at ``lam`` (plain EASE's best regularisation on the
    validation cut; default the start's) with its recency weighting and windowed term each on or
    off: "off" (plain EASE) is always a candidate."""
    on = dataclasses.replace(EaseVariant.of(start), lam=start.ease_lambda if lam is None else float(lam))
    # no windowed term is window 0 (as a fitted model records it), so settings and model agree
    out = [EaseVariant.of(start), on, dataclasses.replace(on, recency_tau=0.0),
           dataclasses.replace(on, window=0, window_weight=0.0), plain_ease(start, on.lam)]
    return list(dict.fromkeys(out))


def selection_rows(holdout: sp.csr_matrix, max_users: int = DEFAULT_MAX_USERS,
                   max_cells: int = DEFAULT_MAX_CELLS, seed: int = 0) -> np.ndarray:
    """The held-out users the selection scores (rating-matrix rows, ascending): those with a
    relevant held-out item, a seeded sample of at most ``max_users`` and ``max_cells`` users x
    items. The recall model stores its validation lists for these same rows."""
    rows = np.flatnonzero(relevant_counts(holdout))
    cap = max(1, min(max_users, max_cells // max(holdout.shape[1], 1)))
    if len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))


@dataclass(frozen=True)
class ValidationRoutes:
    """Every route's lists on the validation cut for the sampled users (rows of ``relevant``):
    route -> users x depth item positions (-1 padded); the EASE route once per variant. A route
    with no list for any user (e.g. no two-tower lists for this cut) is absent."""

    lists: dict[str, np.ndarray]
    ease: dict[EaseVariant, np.ndarray]
    relevant: sp.csr_matrix
    item_counts: np.ndarray       # the fit part's training counts: the popularity discount's
    head: np.ndarray              # long-tail head of the fit part (metrics.head_items)
    seed: int = 0
    lambdas: dict[str, float] = field(default_factory=dict)  # how the EASE route's lambda was chosen
    user_ids: np.ndarray | None = None  # the sampled users' ids, in row order
    # EASE lists of variants scored but never searched (the published settings', for the quality gate)
    extra_ease: dict[EaseVariant, np.ndarray] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return self.relevant.shape[0]

    def single_routes(self) -> dict[str, np.ndarray]:
        """Each route alone (each EASE variant under its own name)."""
        return {**{name: lists for name, lists in self.lists.items() if (lists >= 0).any()},
                **{variant.name: lists for variant, lists in self.ease.items()}}


@dataclass(frozen=True)
class Figures:
    """Validation figures of one list set on the sampled users."""

    recall: float
    ndcg: float
    coverage: float
    long_tail: float
    per_user_recall: np.ndarray = field(repr=False, compare=False)
    per_user_ndcg: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, float]:
        return {"recall@50": round(self.recall, 5), "ndcg@10": round(self.ndcg, 5),
                "coverage@50": round(self.coverage, 5), "long_tail@50": round(self.long_tail, 5)}


def figures(lists: np.ndarray, routes: ValidationRoutes) -> Figures:
    """Recall@50, NDCG@10, coverage@50 (over the catalogue) and long-tail share@50 of ``lists``."""
    counts = relevant_counts(routes.relevant)
    hits = hit_matrix(lists[:, :K], routes.relevant)
    per_user, ndcg = recall_at_k(hits, counts, K), ndcg_at_k(hits, counts, NDCG_K)
    return Figures(float(per_user.mean()), float(ndcg.mean()), catalogue_coverage(lists, K, len(routes.item_counts)),
                   float(long_tail_share(lists, K, routes.head).mean()), per_user, ndcg)


class FusedTopK:
    """``fusion.reciprocal_rank_fusion``'s top K for one set of route lists, vectorised over the
    users: the union of each user's listed items is found once, then every candidate setting
    costs a weighted sum and one sort of that union."""

    def __init__(self, lists: dict[str, np.ndarray], n_items: int, seed: int = 0):
        self.names = list(lists)
        stacked = np.stack([lists[name] for name in self.names], axis=1)        # users x routes x depth
        users, n_routes, depth = stacked.shape
        flat = stacked.reshape(users, n_routes * depth)
        order = np.argsort(flat, axis=1)  # equal entries (an item two routes list) share a slot: any order
        ordered = np.take_along_axis(flat, order, axis=1)
        new = np.ones_like(ordered, dtype=bool)
        new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        slots_sorted = np.cumsum(new, axis=1) - 1
        slots = np.empty_like(slots_sorted)
        np.put_along_axis(slots, order, slots_sorted, axis=1)
        width = int(slots_sorted.max(initial=0)) + 2  # the last slot stays empty: a filler that never lists
        self.items = np.full((users, width), -1, dtype=np.int64)
        np.put_along_axis(self.items, slots_sorted, ordered, axis=1)  # an item listed twice: its slot twice
        # every route's listed entries, user by user and routes in order: (cell of the flattened
        # users x width array, route x depth slot of its vote). A weighted bincount sums each
        # cell's votes in that order, from 0, as adding route after route does: the same sums.
        listed = np.flatnonzero(flat >= 0)
        self.cells = listed // flat.shape[1] * width + slots.ravel()[listed]
        self.votes = listed % flat.shape[1]
        self.rank = np.arange(1, depth + 1, dtype=np.float64)
        self.safe_items = np.maximum(self.items, 0)
        # the catalogue's tie ranks; an empty slot (-1) takes the appended last: never preferred
        self.ties = np.append(tie_order(n_items, seed), np.iinfo(np.int64).max)[self.items]

    def top(self, weights: dict[str, float], c: float, item_weights: np.ndarray | None, k: int = K) -> np.ndarray:
        """Users x ``k`` item positions (-1 padded): each item scored ``sum weight / (c + rank)``
        (routes added in order, as the sparse sum does), times ``item_weights[item]``; ordered by
        score, then the catalogue's seeded tie order."""
        vote = np.concatenate([weights.get(name, 1.0) / (c + self.rank) for name in self.names])
        scores = np.bincount(self.cells, weights=vote[self.votes], minlength=self.items.size).reshape(self.items.shape)
        if item_weights is not None:
            scores *= item_weights[self.safe_items]
        # absent: a slot no route lists (its sum is 0), and weight-0 votes (a sparse sum stores no zero)
        scores[scores == 0] = -np.inf
        columns = self._contenders(scores, k)
        values = np.take_along_axis(scores, columns, axis=1)
        keys = np.where(np.isfinite(values), np.take_along_axis(self.ties, columns, axis=1), np.iinfo(np.int64).max)
        order = np.lexsort((keys, -values), axis=1)[:, :k]
        chosen = np.take_along_axis(columns, order, axis=1)
        out = np.where(np.isfinite(np.take_along_axis(values, order, axis=1)),
                       np.take_along_axis(self.items, chosen, axis=1), -1)
        if out.shape[1] < k:
            out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
        return out

    def _contenders(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Per user, columns holding every entry above the k-th score and the k entries equal to it
        with the best tie ranks (as ``ranking.top_k_dense``): only these can make the top k, so
        only they are sorted."""
        width = scores.shape[1]
        if width <= 2 * k:
            return np.broadcast_to(np.arange(width), scores.shape)
        first = np.argpartition(scores, width - k, axis=1)[:, width - k:]
        top = np.take_along_axis(scores, first, axis=1)
        kth = top.min(axis=1, keepdims=True)
        # only where an entry equal to the k-th score lies outside ``first`` can the tie order
        # change which entries make the top k: the tie ranks are consulted for those users alone
        split = np.flatnonzero((scores == kth).sum(axis=1) > (top == kth).sum(axis=1))
        if not len(split):
            return first
        columns = np.concatenate([first, np.full_like(first, width - 1)], axis=1)  # fillers: always absent
        part, kth_part = scores[split], kth[split]
        tie_ranks = np.where(part == kth_part, self.ties[split], np.iinfo(np.int64).max)
        tied = np.argpartition(tie_ranks, k - 1, axis=1)[:, :k]
        tied = np.where(np.take_along_axis(part, tied, axis=1) == kth_part, tied, width - 1)
        columns[split] = np.concatenate([np.where(top[split] > kth_part, first[split], width - 1), tied], axis=1)
        return columns


def in_route_order(lists: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``lists`` in ``ROUTES`` order: the order ``route_lists`` returns and the fusion sums in."""
    return {name: lists[name] for name in ROUTES if name in lists}


def score(routes: ValidationRoutes, settings: RouteSettings, trust: float = 1.0) -> Figures:
    """The validation figures of the lists ``settings`` fuse from ``routes`` (any EASE variant
    with lists, searched or kept apart), as the search measures a candidate."""
    variant = EaseVariant.of(settings)
    ease = routes.ease.get(variant, routes.extra_ease.get(variant))
    if ease is None:
        raise ValueError(f"no validation lists for the EASE route {variant.name}")
    served = trusted(settings, trust)
    fused = FusedTopK(in_route_order({**routes.lists, "ease": ease}), len(routes.item_counts), routes.seed)
    return figures(fused.top(served.weights, served.rrf_c,
                             popularity_factors(routes.item_counts, served.popularity_discount)), routes)


def popularity_factors(item_counts: np.ndarray, discount: float) -> np.ndarray | None:
    """``routes.popularity_weights`` as the fusion applies it (None: no discount)."""
    return popularity_weights(item_counts, discount) if discount else None


@dataclass
class Candidate:
    """One setting tried, its figures, and whether it meets the floors."""

    settings: RouteSettings
    figures: Figures
    feasible: bool       # meets the floors set by the best single route
    reaches: bool        # meets the reach target (coverage vs plain EASE)

    def row(self) -> dict:
        s = self.settings
        return {"ease_variant": EaseVariant.of(s).name, **{f"weight_{n}": s.weights.get(n, 1.0) for n in ROUTES},
                "popularity_discount": s.popularity_discount, "rrf_c": s.rrf_c, **self.figures.as_dict(),
                "feasible": self.feasible, "reaches": self.reaches}


@dataclass
class Selection:
    """What the search chose and why: the served settings, the decision, the figures of every
    single route and every candidate tried, the guard's bootstrap, and the search's time."""

    settings: RouteSettings
    decision: str
    chosen: dict[str, float]
    best_route: str
    best_route_figures: dict[str, float]
    routes: dict[str, dict[str, float]]
    candidates: list[dict]
    gain: float
    gain_lower: float
    users: int
    seconds: float
    budget_reached: bool
    start: dict[str, float]
    floors: dict[str, float | bool | str]
    ease_lambda: dict[str, float] = field(default_factory=dict)
    ease_variant_notes: list[str] = field(default_factory=list)  # Search.plain_unless_beaten's decisions
    pruned_weights: list[str] = field(default_factory=list)      # Search.pruned's

    def record(self) -> dict:
        """JSON-ready: stored with the run and shown in the report."""
        return {"settings": self.settings.to_json(), "decision": self.decision, "chosen": self.chosen,
                "best_route": self.best_route, "best_route_figures": self.best_route_figures,
                "routes": self.routes, "candidates": self.candidates, "gain": self.gain,
                "gain_lower": self.gain_lower, "users": self.users, "seconds": round(self.seconds, 2),
                "budget_reached": self.budget_reached, "start": self.start, "floors": self.floors,
                "ease_lambda": self.ease_lambda, "ease_variant_notes": self.ease_variant_notes,
                "pruned_weights": self.pruned_weights}


class Search:
    """Coordinate ascent over the fusion settings (module docstring)."""

    def __init__(self, routes: ValidationRoutes, start: RouteSettings, trust: float = 1.0,
                 budget_seconds: float = 60.0, coverage_vs_plain_ease: float = COVERAGE_VS_PLAIN_EASE):
        self.routes, self.trust, self.budget = routes, trust, budget_seconds
        if EaseVariant.of(start) not in routes.ease:
            raise ValueError(f"the starting point's EASE route {EaseVariant.of(start).name} has no validation lists")
        self.start, n_items = start, len(routes.item_counts)
        self.fusers = {variant: FusedTopK(in_route_order({**routes.lists, "ease": lists}), n_items, routes.seed)
                       for variant, lists in routes.ease.items()}
        self.singles = {name: figures(lists, routes) for name, lists in routes.single_routes().items()}
        servable = [name for name in self.singles if not (name == "two_tower" and trust <= 0)]  # trust 0: no say
        self.best_route = max(servable, key=lambda name: (self.singles[name].recall, name))
        best = self.singles[self.best_route]
        plain = [figures(lists, routes) for v, lists in routes.ease.items() if v.plain]
        plain_figures = max(plain, key=lambda f: f.recall) if plain else best
        self.contenders = contenders(self.singles, servable, self.best_route, routes.seed)
        # sets the NDCG floor, and serves when no fusion passes (the best route on an exact tie)
        self.top_route = max(self.contenders, key=lambda name: (self.singles[name].ndcg, name == self.best_route))
        self.top = self.singles[self.top_route]
        self.floors = (NDCG_FLOOR * self.top.ndcg, plain_figures.coverage, plain_figures.long_tail)
        self.reach = coverage_vs_plain_ease * plain_figures.coverage
        self.tried: dict[str, Candidate] = {}
        self.notes: list[str] = []  # what plain_unless_beaten decided, in the search's order
        self.pruning: list[str] = []  # the route weights pruned() dropped, in its order
        self.started = time.monotonic()

    def measure(self, settings: RouteSettings) -> Candidate:
        return self.measure_all([settings], map)[0]

    def measure_all(self, settings: list[RouteSettings], mapper=map) -> list[Candidate]:
        """Each setting's candidate, those not tried yet computed through ``mapper`` (a thread
        pool's map) and recorded in the order given, so that the record does not depend on
        which thread finished first."""
        keys = [s.to_json() for s in settings]
        new = {key: s for key, s in zip(keys, settings) if key not in self.tried}
        for key, candidate in zip(new, mapper(self._candidate, list(new.values()))):
            self.tried[key] = candidate
        return [self.tried[key] for key in keys]

    def _candidate(self, settings: RouteSettings) -> Candidate:
        served = trusted(settings, self.trust)
        lists = self.fusers[EaseVariant.of(settings)].top(
            served.weights, served.rrf_c, popularity_factors(self.routes.item_counts, served.popularity_discount))
        found = figures(lists, self.routes)
        _, coverage, long_tail = self.floors
        feasible = (keeps_the_top(found, self.top) and found.coverage >= coverage
                    and found.long_tail >= long_tail)
        return Candidate(settings, found, feasible, found.coverage >= self.reach)

    def coordinates(self) -> list[tuple[str, list]]:
        """(name, values) of every setting searched: routes with no list for any sampled user
        (or the two-tower route at trust 0) are left at their starting weight."""
        searched = [("ease_variant", list(self.routes.ease))]
        for name in ROUTES:
            lists = self.routes.ease[next(iter(self.routes.ease))] if name == "ease" else self.routes.lists.get(name)
            if lists is not None and (lists >= 0).any() and not (name == "two_tower" and self.trust <= 0):
                searched.append((f"weight_{name}", list(WEIGHT_GRID)))
        return searched + [("popularity_discount", list(DISCOUNT_GRID)), ("rrf_c", list(RRF_C_GRID))]

    def plain_unless_beaten(self, best: Candidate, tried: list[Candidate]) -> Candidate:
        """``best`` of one sweep over the EASE variants, or the best plain-EASE candidate of the
        sweep (as feasible, reaching as far) where ``best``'s recency weighting or windowed term
        does not beat it beyond the noise (paired bootstrap lower bound of the gain not above
        0). The terms were chosen on the bundled data; among some hundred candidates one can
        lead by chance, and a term that led on validation within the noise need not carry to
        other users (at 1M items the windowed term led plain EASE's fusion on validation and lost
        to plain EASE on the test split). What was decided is kept in :attr:`notes`."""
        if _is_plain(best.settings):
            return best
        plain = [c for c in tried if _is_plain(c.settings) and _order(c)[:2] == _order(best)[:2]]
        if not plain:
            return best
        simplest = max(plain, key=_order)
        gain, lower = paired_gain(best.figures.per_user_recall, simplest.figures.per_user_recall, self.routes.seed)
        kept = best if lower > 0 else simplest
        note = (f"{EaseVariant.of(best.settings).name} against {EaseVariant.of(simplest.settings).name} in the "
                f"fusion: {gain:+.4f} (lower bound {lower:+.4f}): {EaseVariant.of(kept.settings).name} kept")
        if note not in self.notes:
            self.notes.append(note)
        return kept

    def served_alone(self) -> str:
        """The route served alone when no fusion passes the guard: of the routes that tie with
        the best one on Recall@50 within the noise (:func:`contenders`), the one with the best
        NDCG@10 (:attr:`top_route`, which sets the floor); plain EASE where that is an EASE
        variant whose recency weighting or windowed term does not beat plain EASE beyond the
        noise (as :meth:`plain_unless_beaten` in the fusion). With the two-tower route's
        validation lists cross-fitted, on a catalogue whose text carries no signal it tied
        plain EASE (0.4064 against 0.4021) with a weaker top (0.1639 against 0.1886), and
        served alone by its mean it lost to EASE on the test split (0.4266 against 0.4441)."""
        variants = {variant.name: variant for variant in self.routes.ease}
        top = variants.get(self.top_route)
        plain = [name for name, v in variants.items() if v.plain]
        if top is None or top.name in plain or not plain:
            return self.top_route
        simplest = max(plain, key=lambda name: (self.singles[name].recall, name))
        _, lower = paired_gain(self.singles[self.top_route].per_user_recall, self.singles[simplest].per_user_recall,
                               self.routes.seed)
        return self.top_route if lower > 0 else simplest

    def pruned(self, chosen: Candidate, mapper=map) -> Candidate:
        """``chosen`` with every route weight it does not need set to 0: a route whose weight 0
        keeps the floors and the reach and whose loss of Recall@50 is within the noise (paired
        bootstrap lower bound of ``chosen``'s gain over it not above 0) is dropped, the one whose
        drop costs least first, until no route can be. The ascent keeps any move that gains
        ``MIN_GAIN``, so among some hundred candidates a route can take weight for noise: on a
        catalogue whose text carries no signal the two LM routes took 0.5 and 0.25 for +0.0006
        and +0.00045 validation Recall@50 on 1,327 users and cost NDCG@10 (0.1677 against 0.1719
        and 0.1700 without each). What was dropped is kept in :attr:`pruning`."""
        while True:
            weighted = [name for name, _ in self.coordinates()
                        if name.startswith("weight_") and chosen.settings.weights.get(name[len("weight_"):], 1.0) > 0]
            if len(weighted) < 2:
                return chosen
            without = self.measure_all([_with(chosen.settings, name, 0.0) for name in weighted], mapper)
            droppable = []
            for name, candidate in zip(weighted, without):
                if candidate.feasible and _order(candidate)[:2] >= _order(chosen)[:2]:
                    gain, lower = paired_gain(chosen.figures.per_user_recall, candidate.figures.per_user_recall,
                                              self.routes.seed)
                    if lower <= 0:
                        droppable.append((candidate.figures.recall, name, gain, lower, candidate))
            if not droppable:
                return chosen
            _, name, gain, lower, candidate = max(droppable, key=lambda d: (d[0], d[1]))
            route = name[len("weight_"):]
            self.pruning.append(f"{route} {chosen.settings.weights.get(route, 1.0):g} -> 0: "
                                f"Recall@50 {gain:+.4f} with it (lower bound {lower:+.4f})")
            chosen = candidate

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.budget

    def run(self) -> tuple[Candidate, bool]:
        """The best candidate found, and whether the time budget cut the search short. A
        coordinate's values are measured in threads (the fusion's array passes release the
        GIL); the best is taken in the grid's order, as one thread would."""
        with ThreadPoolExecutor(ranking_threads()) as pool:
            found, cut_short = self._ascend(pool.map)
            return self.pruned(found, pool.map), cut_short

    def _ascend(self, mapper) -> tuple[Candidate, bool]:
        current = self.measure(self.start)
        for _ in range(MAX_PASSES):
            moved = False
            for name, values in self.coordinates():
                if self.out_of_time():
                    return current, True
                tried = self.measure_all([_with(current.settings, name, v) for v in values], mapper)
                best = max(tried, key=_order)
                plain = self.plain_unless_beaten(best, tried) if name == "ease_variant" else best
                if plain is not best:  # a term within the noise: plain EASE, even below the current mean
                    current, moved = plain, moved or plain.settings != current.settings
                    continue
                if _order(best) > _order(current) and (_order(best)[:2] > _order(current)[:2]
                                                       or best.figures.recall > current.figures.recall + MIN_GAIN):
                    current, moved = best, True
            if not moved:
                break
        return current, False


def _order(candidate: Candidate) -> tuple:
    """Floors met first, then the reach target (soft: when no candidate reaches it, the best
    that meets the floors still serves), then validation Recall@50."""
    return (candidate.feasible, candidate.feasible and candidate.reaches, candidate.figures.recall)


def _is_plain(settings: RouteSettings) -> bool:
    """Whether ``settings`` serve plain EASE (no recency weighting, no windowed term)."""
    return EaseVariant.of(settings).plain


def _with(settings: RouteSettings, name: str, value) -> RouteSettings:
    if name == "ease_variant":
        return value.applied(settings)
    if name.startswith("weight_"):
        return dataclasses.replace(settings, weights=dict(settings.weights, **{name[len("weight_"):]: float(value)}))
    return dataclasses.replace(settings, **{name: float(value)})


def keeps_the_top(found: Figures, top: Figures) -> bool:
    """Whether ``found``'s NDCG@10 is at least ``NDCG_FLOOR`` x ``top``'s beyond the noise: the
    one-sided ``CONFIDENCE`` lower bound of the users' mean of (found - NDCG_FLOOR x top), by the
    normal approximation over the same users, is not below 0. Met on the mean alone, the floor
    held on validation and missed on the test split (M: 0.957x on validation, 0.933x on test)."""
    diff = np.asarray(found.per_user_ndcg, np.float64) - NDCG_FLOOR * np.asarray(top.per_user_ndcg, np.float64)
    if len(diff) < 2:
        return bool(diff.sum() >= 0)
    z = statistics.NormalDist().inv_cdf(CONFIDENCE)
    return bool(diff.mean() - z * diff.std(ddof=1) / np.sqrt(len(diff)) >= 0)


def contenders(singles: dict[str, Figures], servable: list[str], best_route: str, seed: int = 0) -> list[str]:
    """The routes that may be the best one: ``best_route`` and every servable route whose
    validation Recall@50 it does not beat beyond the noise (paired bootstrap lower bound not
    above 0). The NDCG@10 floor is set by the best of these, so that a near-tie on Recall@50
    (at S two-tower 0.3596, plain EASE 0.3571) does not let the top of the list fall below
    the route with the better top."""
    best = singles[best_route].per_user_recall
    return [name for name in servable
            if name == best_route or paired_gain(best, singles[name].per_user_recall, seed)[1] <= 0]


def paired_gain(fused: np.ndarray, single: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(mean per-user gain of ``fused`` over ``single``, its lower ``CONFIDENCE`` bound from a
    paired bootstrap over users)."""
    diff = np.asarray(fused, dtype=np.float64) - np.asarray(single, dtype=np.float64)
    if not len(diff):
        return 0.0, 0.0
    return float(diff.mean()), float(np.quantile(bootstrap_means(diff, BOOTSTRAP, seed), 1.0 - CONFIDENCE))


def route_alone(start: RouteSettings, routes: ValidationRoutes, name: str) -> RouteSettings:
    """Settings whose lists are route ``name``'s alone for every user with history: its weight 1,
    every other route 0 but popularity (only users without history have its lists), no
    discount. An EASE variant's name serves the EASE route with that variant; any other route
    leaves the EASE route at plain EASE (weight 0: the lists do not change), so that the model
    ``ease_model`` fits, and the report's ``route:ease`` row, is plain EASE rather than a variant
    nothing chose."""
    variants = {variant.name: variant for variant in routes.ease}
    route = "ease" if name in variants else name
    plain = [variant for variant in routes.ease if variant.plain]  # ease_variants: the chosen lambda's last
    ease = variants[name] if name in variants else (plain[-1] if plain else EaseVariant.of(start))
    settings = ease.applied(start)
    weights = {r: (1.0 if r == route else 0.0) for r in ROUTES}
    weights["popularity"] = start.weights.get("popularity", 1.0) if route != "popularity" else 1.0
    return dataclasses.replace(settings, weights=weights, popularity_discount=0.0)


def select(routes: ValidationRoutes, start: RouteSettings, trust: float = 1.0,
           budget_seconds: float = 60.0, coverage_vs_plain_ease: float = COVERAGE_VS_PLAIN_EASE) -> Selection:
    """Search the fusion (:class:`Search`), then guard it against the best single route. Without
    a held-out user to score, nothing can be chosen: the starting point serves, and says so."""
    started = time.monotonic()
    if not routes.users:
        return Selection(start, "the starting point: no held-out user to choose on", {}, "", {}, {}, [], 0.0, 0.0, 0,
                         time.monotonic() - started, False, {}, {})
    search = Search(routes, start, trust, budget_seconds, coverage_vs_plain_ease)
    searched, cut_short = search.run()
    single = search.singles[search.best_route]
    best, gain, lower = searched, *paired_gain(searched.figures.per_user_recall, single.per_user_recall, routes.seed)
    if searched.reaches and not (searched.feasible and lower > 0):  # the reach target cost too much: without it
        feasible = [c for c in search.tried.values() if c.feasible]
        fallback = max(feasible, key=lambda c: c.figures.recall, default=None)
        if fallback is not None:  # with plain EASE unless its variant's term beats it beyond the noise
            fallback = search.pruned(search.plain_unless_beaten(fallback, feasible))
        if fallback is not None and fallback is not searched:
            best, gain, lower = fallback, *paired_gain(fallback.figures.per_user_recall, single.per_user_recall,
                                                       routes.seed)
    if best.feasible and lower > 0:
        settings = best.settings
        decision = (f"fusion: Recall@50 {best.figures.recall:.4f} against {search.best_route} alone "
                    f"{single.recall:.4f} (gain {gain:+.4f}, {CONFIDENCE:.0%} lower bound {lower:+.4f})"
                    + ("" if best.reaches else f"; coverage@50 {best.figures.coverage:.4f} short of the reach "
                                               f"target {search.reach:.4f}"))
        chosen = best.figures
    else:
        alone = search.served_alone()
        settings = route_alone(start, routes, alone)
        why = "meets no floor" if not best.feasible else f"gain {gain:+.4f} not above the noise (lower bound {lower:+.4f})"
        decision = f"{alone} alone: the best fusion ({best.figures.recall:.4f}) {why}" + (
            "" if alone == search.best_route else f"; {search.best_route} does not beat it beyond the noise") + (
            "" if alone != search.top_route or alone == search.best_route else
            f" (NDCG@10 {search.singles[alone].ndcg:.4f} against {single.ndcg:.4f})")
        chosen = search.singles[alone]
    start_figures = search.measure(search.start).figures
    return Selection(
        settings=settings, decision=decision, chosen=chosen.as_dict(), best_route=search.best_route,
        best_route_figures=single.as_dict(), routes={n: f.as_dict() for n, f in search.singles.items()},
        candidates=[c.row() for c in search.tried.values()], gain=round(gain, 5), gain_lower=round(lower, 5),
        users=routes.users, seconds=time.monotonic() - started, budget_reached=cut_short,
        start=start_figures.as_dict(), floors={**dict(zip(("ndcg@10", "coverage@50", "long_tail@50"),
                                                          (round(f, 5) for f in search.floors))),
                                               "ndcg@10 set by": search.top_route,
                                               "coverage@50 reach target": round(search.reach, 5),
                                               "reached": chosen.coverage >= search.reach},
        ease_lambda=routes.lambdas, ease_variant_notes=search.notes, pruned_weights=search.pruning)
