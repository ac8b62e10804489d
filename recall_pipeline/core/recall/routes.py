"""The recall routes, each proposing its own top N per user, and their merge.

0. ``two_tower``: the trained two-tower model's user vector searched in the FAISS index of its
   item-tower outputs (items nobody has rated are placed there by their text).
1. ``lm_profile``: the user's history vector searched in the FAISS index of LM embeddings.
2. ``lm_interest``: the user's interest vectors (multi-interest centroids and the encoded
   interest text) against the raw LM item embeddings, an item scored by its best-matching
   interest: the route that reaches items nobody has rated yet.
3. ``ease``: item-to-item collaborative filtering for users with history: EASE plus a term for
   items taken up near each other in time (``core.training.ease.windowed``), scoring the
   history weighted by recency.
4. ``popularity``: the most popular items, for users with no history.
5. ``text_cf``: items nobody has interacted with yet (cold items), ranked for users with history
   by the TextCF model (``core.training.text_cf``), which learned from the interactions which
   directions of the LM text space predict co-interaction: how cold items reach the lists.
   A recall of many users searches an exact FAISS index of the cold items rather than scoring
   them a block at a time (:meth:`TextCFRoute.build`).

Lists are merged by weighted reciprocal-rank fusion and re-ranked by MMR (``core.fusion``).
Every route excludes the user's training items.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.evaluation import baselines
from recall_pipeline.core.recall.fusion import gather, mmr, rank_matrix, rank_matrix_values, reciprocal_rank_fusion
from recall_pipeline.core.ids import positions, require_same_ids
from recall_pipeline.core.features.rating_matrix import RatingMatrix
from recall_pipeline.core.recall.index import build_exact_index
from recall_pipeline.core.recall.ranking import search_top_k, tie_order, top_k_dense, top_k_scored
from recall_pipeline.core.scoring import with_columns
from recall_pipeline.core.training.ease.model import EASE_MAX_ITEMS, EaseModel
from recall_pipeline.core.training.ease import windowed as windowed_ease

ROUTES = ("two_tower", "lm_profile", "lm_interest", "ease", "popularity", "text_cf")


# The text_cf route's starting weight in the fused lists (``route_settings`` chooses each run's
# on its validation cut): the largest of 0 to 1 whose lists kept validation Recall@50 within
# 0.001 of the lists without the route on the bundled data (bench/tuning/tune_fusion.py,
# bench/results/tuning/tune_fusion.txt).
TEXT_CF_WEIGHT = 0.05


@dataclass(frozen=True)
class RouteSettings:
    """Route depth, fusion weights, popularity discount, RRF constant, MMR diversity and the EASE
    route's fit and recency weighting: what the nightly lists are computed with.

    Each full run chooses its own on its validation cut (``route_settings``,
    ``core.recall.route_selection``), starting from these defaults, which were chosen once on
    the bundled data's validation cut (``bench/tuning/tune_fusion.py``,
    ``bench/results/tuning/tune_fusion.txt``): two-tower 1.0, EASE 1.0, the LM routes 0,
    popularity discount 0.075, MMR lambda 1.0 (the fused order; a team that wants genre
    diversity lowers it, and the selection then ranks the fused order it no longer serves). The
    two-tower weight is scaled by the serving model version's trust (``core.training.route_trust``)."""

    depth: int = 200
    weights: dict[str, float] = field(default_factory=lambda: {
        "two_tower": 1.0, "ease": 1.0, "lm_profile": 0.0, "lm_interest": 0.0, "popularity": 1.0,
        "text_cf": TEXT_CF_WEIGHT})
    rrf_c: float = 60.0
    popularity_discount: float = 0.075
    mmr_lambda: float = 1.0
    mmr_pool: int = 200
    ease_lambda: float = 200.0
    ease_max_items: int = EASE_MAX_ITEMS  # above it, EASE over the most-interacted items
    # The EASE route weighs a user's history by recency (RatingMatrix.recency_weighted): the
    # latest interaction 1, older ones decaying with the place from the end towards the floor.
    # Start chosen on the bundled validation cut (bench/tuning/tune_fusion.py): the EASE route's
    # validation Recall@50 0.3082 unweighted, 0.3323 at tau 5 / floor 0.1. tau 0: unweighted, as
    # the EASE baseline; each run's selection tries both.
    ease_recency_tau: float = 5.0
    ease_recency_floor: float = 0.1
    # ... and adds what users take up near each other in time (core.training.ease.windowed):
    # item pairs at most ease_window places apart in a history, at ease_window_weight times
    # EASE's spread (0: EASE alone). Chosen on the validation cut (bench/tuning/tune_fusion.py
    # --ease-window-only, at the fusion settings above, which the full grid chose with the term
    # at window 30 / weight 0.3): fused Recall@50 0.3502 without the term, 0.3593 at window 20 /
    # weight 0.7 (the route alone 0.3323 -> 0.3476), coverage@50 0.3254 -> 0.3445.
    ease_window: int = 20
    ease_window_weight: float = 0.7
    seed: int = 0
    # A route fused with weight 0 adds nothing to the lists, and is not computed unless asked for
    # its rank_<route> provenance columns: at 1M items the two LM routes (weight 0 by default)
    # are 5 to 6 of a user's ~7 FAISS searches.
    compute_zero_weight_routes: bool = False

    def computes(self, route: str) -> bool:
        """Whether ``route``'s lists are computed: it votes in the fusion, or provenance is asked for."""
        return self.compute_zero_weight_routes or self.weights.get(route, 1.0) > 0

    def with_ease_fit(self, lam: float, max_items: int, window: int, window_weight: float) -> "RouteSettings":
        """These settings with the EASE fit's (a stored model's): what the route scores with."""
        return dataclasses.replace(self, ease_lambda=float(lam), ease_max_items=int(max_items),
                                   ease_window=int(window), ease_window_weight=float(window_weight))

    def to_json(self) -> str:
        """The settings as JSON: stored with each recall run (``recall.refreshes.route_settings``), so
        that the evaluation scores each route alone as that run computed it."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> RouteSettings:
        """Settings :meth:`to_json` wrote; None or empty (a run recorded before they were kept): the
        defaults. A field this release does not know is an error, not silently ignored."""
        if not text:
            return cls()
        values = json.loads(text)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"route settings with fields this release does not know: {', '.join(unknown)} "
                             f"(recorded by a later release?)")
        return cls(**values)


def interest_route(index, rm: RatingMatrix, owners: np.ndarray, vectors: np.ndarray, depth: int,
                   seed: int = 0, rows: np.ndarray | None = None) -> np.ndarray:
    """Per user, the top ``depth`` items by their best interest's score; one list per
    rating-matrix row of ``rows`` (default every user), in that order.

    ``owners`` are the rating-matrix rows the interest ``vectors`` belong to (several per user);
    interests of users outside ``rows`` are ignored.
    """
    rows = np.arange(len(rm.user_ids)) if rows is None else np.asarray(rows)
    slot = row_slots(len(rm.user_ids), rows)
    mine = slot[owners] >= 0 if len(owners) else np.zeros(0, dtype=bool)
    return best_vector_lists(index, rm.matrix[rows], slot[np.asarray(owners[mine], dtype=np.int64)], vectors[mine],
                             depth, seed)


def best_vector_lists(index, exclude: sp.csr_matrix, owners: np.ndarray, vectors: np.ndarray, depth: int,
                      seed: int = 0) -> np.ndarray:
    """Per row of ``exclude`` (users x the index's items: what each may not be offered), the top
    ``depth`` index items by the best score of that row's ``vectors`` (``owners``: each
    vector's row, several allowed), equal scores in the seeded tie order; a row without a
    vector has no list (-1)."""
    lists = np.full((exclude.shape[0], depth), -1, dtype=np.int64)
    if not len(owners):
        return lists
    items, scores = search_top_k(index, vectors, exclude, owners, depth, seed=seed)
    if len(np.unique(owners)) == len(owners):  # one vector per row: its search is the row's list
        lists[owners] = items
        return lists
    valid = items >= 0
    frame = pl.DataFrame({"row": np.repeat(owners, depth)[valid.ravel()], "item": items[valid],
                          "score": scores[valid].astype(np.float64)})
    ties = pl.DataFrame({"item": np.arange(exclude.shape[1]), "tie": tie_order(exclude.shape[1], seed)})
    best = (frame.group_by("row", "item").agg(pl.col("score").max())
            .join(ties, on="item", how="left")
            .sort(["row", "score", "tie"], descending=[False, True, False])
            .group_by("row", maintain_order=True).head(depth)
            .with_columns(position=pl.int_range(pl.len()).over("row")))
    lists[best["row"].to_numpy(), best["position"].to_numpy()] = best["item"].to_numpy()
    return lists


def row_slots(n_users: int, rows: np.ndarray) -> np.ndarray:
    """For every rating-matrix row, its position in ``rows`` (-1: not among them)."""
    slot = np.full(n_users, -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    return slot


# Users one recall ranks from which the TextCF route searches an exact FAISS index of its cold
# items instead of scoring them a block at a time. FAISS's flat search computes the same inner
# products and keeps each query's best in a heap; the dense ranking copies, negates and
# partially sorts every score, in blocks of a dozen users at 300,000 items, each block reading
# all the items' features again. At 334,077 cold items (385 features, a 2-core VM): the index
# built in 2.7 s, 2,000 users ranked in 3.0 to 4.4 s against 20.8 to 22.4 s (three runs), each
# user's top 50 the same items (bench/perf/text_cf_index.py, bench/results/perf/text_cf_index.txt). Below, the route scores
# as before: the validation cut's 2,000 users, an ad-hoc query, a feedback refresh's few users,
# the bundled data's 671.
INDEXED_MIN_USERS = 5_000


@dataclass(frozen=True)
class TextCFRoute:
    """The fitted TextCF model (``core.training.text_cf``), the catalogue's item features, and
    what every block of users scores against: the catalogue positions of the items that had no
    training interaction at fit (``candidates``) and their features, transposed; ``index``: an
    exact inner-product index of those features (ids: positions in ``candidates``) that a
    recall of many users searches instead (None: every candidate scored)."""

    model: object
    features: np.ndarray
    candidates: np.ndarray
    candidate_features: np.ndarray
    index: object | None = None

    @classmethod
    def build(cls, model, features: np.ndarray, item_ids: np.ndarray, users: int = 0) -> TextCFRoute:
        """The route over the catalogue ``item_ids`` (the rating matrix's items, in its order),
        for a recall of ``users`` users: with the index from ``INDEXED_MIN_USERS`` users."""
        candidates = np.flatnonzero(np.isin(item_ids, model.untrained_ids))
        chosen = features[candidates]
        index = build_exact_index(chosen) if users >= INDEXED_MIN_USERS and len(candidates) else None
        return cls(model, features, candidates, chosen.T, index)


@dataclass(frozen=True)
class LMView:
    """LM vectors of users as a route sees them: ``owners`` (rows of the users' matrix, several
    vectors per user allowed: an item scores its best) and ``vectors``."""

    owners: np.ndarray
    vectors: np.ndarray


def text_cf_route(route: TextCFRoute, rm: RatingMatrix, rows: np.ndarray, depth: int,
                  seed: int = 0, views: dict[str, LMView] | None = None) -> np.ndarray:
    """Per user of ``rows``, the top ``depth`` of the items that had no training interaction when
    the model was fitted (those still in the catalogue, less the user's own training items) by
    the cold scorer the model chose: its TextCF score (one d-vector per user against those
    items' features, a block at a time) or an LM view of ``views`` (``lm_profile``, ``lm_interest``)."""
    return text_cf_lists(route, rm.matrix, rows, depth, seed, views)


def text_cf_lists(route: TextCFRoute, histories: sp.csr_matrix, rows: np.ndarray, depth: int,
                  seed: int = 0, views: dict[str, LMView] | None = None) -> np.ndarray:
    """:func:`text_cf_route` over any users x items ``histories`` (an ad-hoc history: one row)."""
    candidates = route.candidates
    lists = np.full((len(rows), depth), -1, dtype=np.int64)
    if not len(candidates) or not len(rows):
        return lists
    exclude = histories[rows][:, candidates].tocsr()
    if route.index is not None:
        top = best_vector_lists(route.index, exclude, *cold_queries(route, histories, rows, views), depth, seed)
    else:
        top, _ = top_k_scored(cold_scorer(route, histories, rows, views), np.arange(len(rows)), depth,
                              len(candidates), exclude, seed)
    return np.where(top >= 0, candidates[np.where(top >= 0, top, 0)], -1)


def cold_scorer(route: TextCFRoute, histories: sp.csr_matrix, rows: np.ndarray, views: dict[str, LMView] | None):
    """Positions into ``rows`` -> their scores of the route's candidates, by the cold scorer the
    model chose (``text_cf.COLD_SCORERS``)."""
    name = route.model.cold_scorer
    if name == "text_cf":
        queries = route.model.user_queries(histories, route.features, rows)
        return lambda block: queries[block] @ route.candidate_features
    view = chosen_view(name, views)
    score = interest_scorer(histories.shape[0], view.owners, view.vectors, route.candidate_features[:-1].T)
    return lambda block: score(rows[block])


def cold_queries(route: TextCFRoute, histories: sp.csr_matrix, rows: np.ndarray,
                 views: dict[str, LMView] | None) -> tuple[np.ndarray, np.ndarray]:
    """(owners: positions into ``rows``, query vectors) that :func:`cold_scorer` scores with, as
    searches of the route's index: TextCF's one query per user, or the chosen LM view's vectors
    with a 0 for the features' constant column (the score it gives is the view's own)."""
    name = route.model.cold_scorer
    if name == "text_cf":
        return np.arange(len(rows)), route.model.user_queries(histories, route.features, rows)
    view = chosen_view(name, views)
    slot = row_slots(histories.shape[0], rows)
    mine = slot[view.owners] >= 0
    vectors = np.asarray(view.vectors[mine], dtype=np.float32)
    return slot[view.owners[mine]], np.hstack([vectors, np.zeros((len(vectors), 1), np.float32)])


def chosen_view(name: str, views: dict[str, LMView] | None) -> LMView:
    """The LM view ``name`` of ``views``: refused rather than guessed when it was not given."""
    if not views or name not in views:
        raise ValueError(f"the cold items are ranked by the {name} view, and no {name} vectors were given")
    return views[name]


@dataclass(frozen=True)
class ModelRoute:
    """A trained model's index and its user vectors for rating-matrix ``rows``."""

    index: object
    rows: np.ndarray
    user_vectors: np.ndarray


def route_lists(index, index_item_ids: np.ndarray, rm: RatingMatrix, profile_user_ids: np.ndarray,
                profiles: np.ndarray, interest_user_ids: np.ndarray, interests: np.ndarray,
                settings: RouteSettings = RouteSettings(),
                model: ModelRoute | None = None, rows: np.ndarray | None = None,
                ease: EaseModel | None = None,
                popularity: np.ndarray | None = None,
                text_cf: TextCFRoute | None = None) -> dict[str, np.ndarray]:
    """Every route's lists, one row per rating-matrix row of ``rows`` (default every user, in
    ``rm.user_ids`` order) x depth (a route without input, e.g. ``two_tower`` with no ``model``,
    has empty lists: -1, and so has a route fused with weight 0 unless
    ``settings.compute_zero_weight_routes``).

    ``rows`` lets a shard compute only its users: the models fitted on the whole matrix (EASE,
    popularity) are still fitted on all of it, and every route ranks each user on their own, so a
    user's lists do not depend on which other users are computed with them.

    ``ease``: an EASE model fitted elsewhere (default: fit on ``rm``), scoring each user's
    recency-weighted history (:func:`ease_route_scorer`); ``popularity``: item scores of the popularity route (default: ``rm``'s training
    counts). Both let ``rm`` be a few users' rows of a larger matrix (a feedback refresh).
    ``text_cf``: the cold-item route's model (None: no lists for that route)."""
    require_same_ids(rm.item_ids, index_item_ids, "the FAISS index's items against the rating matrix's")
    n_users, depth = len(rm.user_ids), settings.depth
    rows = np.arange(n_users) if rows is None else np.asarray(rows, dtype=np.int64)
    slot = row_slots(n_users, rows)
    out = {name: np.full((len(rows), depth), -1, dtype=np.int64) for name in ROUTES}
    profile_rows = positions(rm.user_ids, profile_user_ids, "profile users among the rating matrix's users")
    mine = (slot[profile_rows] >= 0) & settings.computes("lm_profile")
    if mine.any():
        out["lm_profile"][slot[profile_rows[mine]]], _ = search_top_k(
            index, profiles[mine], rm.matrix, profile_rows[mine], depth, seed=settings.seed)
    if model is not None and len(model.rows) and settings.computes("two_tower"):
        mine = slot[model.rows] >= 0
        if mine.any():
            out["two_tower"][slot[model.rows[mine]]], _ = search_top_k(
                model.index, model.user_vectors[mine], rm.matrix, model.rows[mine], depth, seed=settings.seed)
    owners = positions(rm.user_ids, interest_user_ids, "interest users among the rating matrix's users")
    if settings.computes("lm_interest"):
        out["lm_interest"] = interest_route(index, rm, owners, interests, depth, settings.seed, rows)
    has_history = np.diff(rm.matrix.indptr) > 0
    history = rows[has_history[rows]]
    if len(history) and settings.computes("ease"):
        out["ease"][slot[history]] = ease_route(rm, settings, history, ease)
    if text_cf is not None and len(history) and settings.computes("text_cf"):
        views = {"lm_profile": LMView(profile_rows, profiles), "lm_interest": LMView(owners, interests)}
        out["text_cf"][slot[history]] = text_cf_route(text_cf, rm, history, depth, settings.seed, views)
    newcomers = rows[~has_history[rows]]
    if len(newcomers) and settings.computes("popularity"):
        scores = baselines.popularity_scores(rm.matrix) if popularity is None else popularity
        top, _ = top_k_dense(np.asarray(scores, dtype=np.float64)[None, :], depth, seed=settings.seed)
        out["popularity"][slot[newcomers]] = top[0]
    return out


def ease_route(rm: RatingMatrix, settings: RouteSettings, rows: np.ndarray,
               model: EaseModel | None = None) -> np.ndarray:
    """The EASE route's top ``settings.depth`` items for the users at ``rows`` (:func:`ease_route_scorer`).

    A capped model's scorer proposes only its columns (``scoring.proposing``: every other item
    scores -inf and never makes a list), so only those are scored and ranked: the lists of the
    ranking over the whole catalogue, without scoring and sorting a million -inf per user at
    scale; and only these users' histories are weighed."""
    if model is None:
        model = fit_ease_route(rm, settings)
    if model.columns is None:
        top, _ = top_k_scored(ease_route_scorer(rm, settings, model), rows, settings.depth, len(rm.item_ids),
                              rm.matrix, settings.seed)
        return top
    weighted = rm.recency_weighted(settings.ease_recency_tau, settings.ease_recency_floor, rows)
    top, _ = top_k_scored(model.scorer(weighted, binarize=False), np.arange(len(rows)), settings.depth,
                          len(rm.item_ids), rm.matrix[rows], settings.seed)
    return top


def fit_ease_route(rm: RatingMatrix, settings: RouteSettings) -> EaseModel:
    """The EASE route's model fitted on ``rm``: EASE with the windowed term of ``settings``."""
    return windowed_ease.fit(rm, settings.ease_lambda, settings.ease_max_items, settings.ease_window,
                             settings.ease_window_weight, settings.seed)


def ease_route_scorer(rm: RatingMatrix, settings: RouteSettings,
                      model: EaseModel | None = None) -> baselines.Scorer:
    """The EASE route as a scorer over ``rm``'s rows: ``model`` (default: EASE fitted on ``rm``)
    applied to each user's history weighted by recency (``settings.ease_recency_*``)."""
    if model is None:
        model = fit_ease_route(rm, settings)
    weighted = rm.recency_weighted(settings.ease_recency_tau, settings.ease_recency_floor)
    return model.scorer(weighted, binarize=False)


@dataclass(frozen=True)
class MergedLists:
    """The final lists with, per entry, the fused score and every route's rank (0: absent)."""

    items: np.ndarray
    scores: np.ndarray
    route_ranks: dict[str, np.ndarray]
    primary_route: np.ndarray  # the route whose weighted vote for the item was largest

    @staticmethod
    def concat(parts: list[MergedLists]) -> MergedLists:
        """The lists of several blocks of users, one after the other."""
        return MergedLists(np.vstack([p.items for p in parts]), np.vstack([p.scores for p in parts]),
                           {name: np.vstack([p.route_ranks[name] for p in parts]) for name in parts[0].route_ranks},
                           np.vstack([p.primary_route for p in parts]))


def popularity_weights(train_counts: np.ndarray, discount: float) -> np.ndarray:
    """``(1 + count) ** -discount`` per item: the popularity-aware re-ranking factor (0: none).

    A fused score divided by a power of the item's training count trades a little relevance for
    exposure of less popular items; ``discount`` is chosen on validation."""
    return (1.0 + np.asarray(train_counts, dtype=np.float64)) ** -discount


def merge_routes(lists: dict[str, np.ndarray], item_vectors: np.ndarray, k: int,
                 settings: RouteSettings = RouteSettings(),
                 train_counts: np.ndarray | None = None) -> MergedLists:
    """Fuse the routes' lists (with the popularity discount when ``train_counts`` are given),
    re-rank the pool by MMR to ``k``, and keep each item's provenance."""
    n_items = len(item_vectors)
    item_weights = (popularity_weights(train_counts, settings.popularity_discount)
                    if train_counts is not None and settings.popularity_discount else None)
    pool = reciprocal_rank_fusion(lists, settings.weights, max(k, settings.mmr_pool), n_items,
                                  settings.rrf_c, settings.seed, item_weights)
    final = mmr(pool.items, pool.scores, item_vectors, k, settings.mmr_lambda)
    scores = gather(rank_matrix_values(pool.items, pool.scores, n_items), final, float)
    ranks = {name: gather(rank_matrix(route, n_items), final) for name, route in lists.items()}
    names = list(ranks)
    votes = np.stack([np.where(ranks[n] > 0, settings.weights.get(n, 1.0) / (settings.rrf_c + ranks[n]), 0.0)
                      for n in names])
    primary = np.array(names, dtype=object)[votes.argmax(axis=0)]
    return MergedLists(final, np.where(final >= 0, scores, -np.inf).astype(np.float32), ranks, primary)


# Interest vectors x items scored per matrix product inside interest_scorer (float32 cells).
INTEREST_CELLS = 32_000_000


def interest_scorer(n_users: int, owners: np.ndarray, vectors: np.ndarray, item_vectors: np.ndarray):
    """The ``lm_interest`` route as a dense scorer over ``item_vectors`` for rows of ``n_users``
    users (``owners``: the row of each vector): each item's score is its best interest's
    (users without interests score 0). A block's interests are scored in matrix products of
    at most ``INTEREST_CELLS`` cells, then reduced to each user's maximum, rather than one small
    product per user (at 100,000 items the per-user loop took minutes)."""
    given = (owners, vectors)
    order = np.argsort(owners, kind="stable")
    owners, vectors = owners[order], np.ascontiguousarray(vectors[order], dtype=np.float32)
    starts = np.searchsorted(owners, np.arange(n_users))
    ends = np.searchsorted(owners, np.arange(n_users), side="right")
    items_t = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float32).T)
    per_product = max(1, INTEREST_CELLS // max(items_t.shape[1], 1))

    def scores(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), items_t.shape[1]))
        have = np.flatnonzero(ends[rows] > starts[rows])
        counts = (ends - starts)[rows[have]]
        first = 0
        while first < len(have):  # users whose interests together fit one product
            last = first + max(1, int(np.searchsorted(np.cumsum(counts[first:]), per_product, side="right")))
            picked = rows[have[first:last]]
            index = np.concatenate([np.arange(starts[r], ends[r]) for r in picked])
            products = vectors[index] @ items_t
            offsets = np.concatenate([[0], np.cumsum(counts[first:last])[:-1]])
            out[have[first:last]] = np.maximum.reduceat(products, offsets, axis=0)
            first = last
        return out

    return with_columns(scores, lambda columns: interest_scorer(n_users, *given, np.asarray(item_vectors)[columns]))
