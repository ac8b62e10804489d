"""TextCF: a closed-form model that scores items nobody has interacted with from their text.

A cold item has only its LM embedding, and the raw LM similarity between a user's history and
an item ranks what *reads* alike, not what the same people watch. TextCF learns, from the
training interactions, which directions of the text space predict co-interaction — the linear
relative of beeFormer (RecSys'24: train text similarity to reconstruct the interaction matrix,
an EASE-style loss) on a frozen encoder, solved in closed form instead of by gradient steps.

Items are represented by features ``F`` (items x d): the unit LM embedding and a constant
(the constant lets the model learn how popular items that read like an item are). A user's
history in feature space is ``A = D^-alpha X F`` (X the binary training matrix, D the history
lengths: ``alpha`` evens out heavy users' weight in the fit). The model is the d x d matrix
``W`` minimising ``||D^-alpha X - A W F'||^2 + lam ||W||^2``; its normal equations
``C W G + lam W = C`` (C = A'A, G = F'F) are solved exactly through the eigenvectors of C and G.
A user's scores are ``(x_u F) W F'``: one d-vector per user against the item features, so the
cost grows with users x d and items x d, never users x items, and the fit holds only d x d
arrays. ``lam`` (relative to the scale of C and G) and ``alpha`` are chosen on the protocol's
pseudo-cold validation items (rule 4), never on the test split (:func:`tune`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.scoring import with_columns

CONSTANT = 1.0                  # the constant feature's value (unit LM vectors have norm 1)
LAMBDA_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)   # relative to mean eigenvalue of C x that of G
ALPHA_GRID = (0.0, 0.5, 1.0)
# The cold scorer's blend of TextCF with the raw text similarity of the user's history (the LM's
# own view, ``W = I``): 0 TextCF alone, 1 the LM alone; chosen on pseudo-cold validation items.
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
BLEND_SAMPLE_USERS, BLEND_SAMPLE_ITEMS = 256, 5_000
# What ranks the cold items, chosen per run on pseudo-cold validation items (:func:`tune`):
# TextCF (blended with the LM's view as above), or the LM alone as a recall route sees a user:
# the history profile (``lm_profile``) or the best of the user's interest vectors
# (``lm_interest``: k-means interests and the encoded interest text).
TEXT_CF, LM_PROFILE, LM_INTEREST = "text_cf", "lm_profile", "lm_interest"
COLD_SCORERS = (TEXT_CF, LM_PROFILE, LM_INTEREST)
ANY_ENCODER = ""                # :func:`load` without the encoder check (reading its metadata)


def item_features(item_vectors: np.ndarray) -> np.ndarray:
    """``F``: each item's unit LM vector and the constant feature (items x (dim + 1), float32:
    1.5 GB at 1M items; the fit's d x d products are taken in float64)."""
    vectors = np.asarray(item_vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return np.hstack([unit, np.full((len(unit), 1), CONSTANT, dtype=np.float32)])


def history_features(train: sp.csr_matrix, features: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    """``D^-alpha X F``: each user's (binary) history summed in feature space (users x d).

    Summed in float64 over the features of the items these histories hold only: a sparse
    float64 matrix times float32 features makes scipy copy *every* item's features to float64
    first (3 GB at 1M items, for each block of users the route or the evaluation scores). The
    sums are the same, term by term in the same order."""
    x = sp.csr_matrix(train, dtype=np.float64, copy=True)
    x.data[:] = 1.0
    lengths = np.maximum(np.diff(x.indptr), 1).astype(np.float64)
    used = np.unique(x.indices)
    held = sp.csr_matrix((x.data, np.searchsorted(used, x.indices), x.indptr), shape=(x.shape[0], len(used)))
    return np.asarray(held @ np.asarray(features[used], dtype=np.float64)) / lengths[:, None] ** alpha


@dataclass(frozen=True)
class TextCF:
    """A fitted TextCF model: ``weights`` (d x d) over the features of :func:`item_features`,
    and the ids of the items that had no training interaction when it was fitted (what the
    ``text_cf`` route proposes until the next fit, so that lists copied by a feedback refresh
    and lists recomputed by it draw on the same items)."""

    weights: np.ndarray
    lam: float
    alpha: float
    untrained_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fit_run: str = ""
    blend: float = 0.0   # the share of the LM's own view in ``weights`` (:func:`blended`)
    cold_scorer: str = TEXT_CF  # what ranks the cold items (:data:`COLD_SCORERS`): these weights or an LM view

    def user_queries(self, train: sp.csr_matrix, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Query vectors of the users at ``rows`` (their scores are queries @ features.T), in the
        features' dtype, so that scoring does not copy the item features to another type."""
        queries = history_features(train[np.asarray(rows)], features, 0.0) @ self.weights
        return queries.astype(features.dtype, copy=False)

    def scorer(self, train: sp.csr_matrix, features: np.ndarray):
        """Dense scores for a block of user rows (the evaluation's and the ranking helper's form)."""
        return with_columns(lambda rows: self.user_queries(train, features, rows) @ features.T,
                            lambda columns: self._scorer_of(train, features, features[columns]))

    def _scorer_of(self, train: sp.csr_matrix, features: np.ndarray, items: np.ndarray):
        """Scores of ``items`` (some rows of ``features``) alone: the queries need every item."""
        return lambda rows: self.user_queries(train, features, rows) @ items.T


def fit(train: sp.csr_matrix, features: np.ndarray, lam: float, alpha: float = 0.0) -> TextCF:
    """Solve ``C W G + lam' W = C`` exactly, ``lam' = lam x mean eig(C) x mean eig(G)``.

    With C = U diag(s) U' and G = V diag(g) V', W = U M V' where
    M_ij = s_i (U'V)_ij / (s_i g_j + lam'): the Sylvester-type equation decouples in those bases.
    Only items with training interactions carry information; the others have zero rows in X."""
    history = history_features(train, features, alpha)
    c = history.T @ history
    trained = np.asarray(features[np.diff(sp.csc_matrix(train).indptr) > 0], dtype=np.float64)
    g = trained.T @ trained
    s, u = np.linalg.eigh(c)
    gs, v = np.linalg.eigh(g)
    s, gs = np.clip(s, 0.0, None), np.clip(gs, 0.0, None)
    scale = lam * max(s.mean(), 1e-12) * max(gs.mean(), 1e-12)
    m = s[:, None] * (u.T @ v) / (s[:, None] * gs[None, :] + scale)
    return TextCF(u @ m @ v.T, float(lam), float(alpha))


def fit_for_serving(train: sp.csr_matrix, item_ids: np.ndarray, features: np.ndarray, lam: float,
                    alpha: float, fit_run: str, blend: float = 0.0, cold_scorer: str = TEXT_CF) -> TextCF:
    """:func:`fit` on the whole training matrix (:func:`blended` with the LM's view by
    ``blend``), recording the items it has no interaction for (the route's candidates), the
    run that fitted it and what ranks the cold items (``cold_scorer``)."""
    if cold_scorer not in COLD_SCORERS:
        raise ValueError(f"cold scorer {cold_scorer!r}: expected one of {', '.join(COLD_SCORERS)}")
    model = blended(fit(train, features, lam, alpha), train, features, blend)
    return replace(model, untrained_ids=untrained(train, item_ids), fit_run=fit_run, cold_scorer=cold_scorer)


def blended(model: TextCF, train: sp.csr_matrix, features: np.ndarray, blend: float) -> TextCF:
    """``model`` with weights ``(1 - blend) W / s_W + blend I / s_I``: TextCF mixed with the raw
    text similarity of the user's history to the item (``I``: the LM's own view, no learning),
    each scaled by its scores' spread (``s``) on a seeded sample of users, so ``blend`` is a share
    of the two views whatever their scales. 0: the model unchanged; 1: the LM's view alone."""
    if blend <= 0:
        return model
    identity = np.eye(len(model.weights))
    if blend >= 1:
        return replace(model, weights=identity, blend=1.0)
    rows = np.flatnonzero(np.diff(sp.csr_matrix(train).indptr) > 0)
    rows = np.sort(np.random.default_rng(0).permutation(rows)[:BLEND_SAMPLE_USERS])
    history = history_features(sp.csr_matrix(train)[rows], features, 0.0)
    items = np.sort(np.random.default_rng(0).permutation(len(features))[:BLEND_SAMPLE_ITEMS])
    sample = np.asarray(features[items], dtype=np.float64)
    spread = [float(np.std(history @ w @ sample.T)) for w in (model.weights, identity)]
    if min(spread) <= 0:
        return model
    weights = (1.0 - blend) * model.weights / spread[0] + blend * identity / spread[1]
    return replace(model, weights=weights, blend=float(blend))


@dataclass(frozen=True)
class Tuned:
    """The chosen (lam, alpha) and blend, the cold scorer chosen, the pseudo-cold Recall@20 of
    that choice, and every setting's figure: the grid's and the blends' (at the chosen lam and
    alpha) on the users they were judged on, and each cold scorer's (TextCF so blended, the LM
    views) on the users the scorers were compared on, in ``scorers``."""

    lam: float
    alpha: float
    recall: float
    grid: dict[tuple[float, float], float]
    blend: float = 0.0
    blends: dict[float, float] = field(default_factory=dict)
    cold_scorer: str = TEXT_CF
    scorers: dict[str, float] = field(default_factory=dict)
    margin: Margin | None = None


@dataclass(frozen=True)
class Margin:
    """How far the chosen cold scorer leads the next best on the same pseudo-cold users: the
    mean per-user gain in Recall@20 and its lower 95% bound (a paired bootstrap over users,
    ``route_selection.paired_gain``, as the warm choice's guard). Reported, not acted on: the
    best scorer serves either way; a bound below 0 says the choice is within the noise (few
    pseudo-cold users, or few hits among many cold items)."""

    runner_up: str
    gain: float
    lower_bound: float

    def describe(self) -> str:
        return f"{self.gain:+.4f} over {self.runner_up} (95% lower bound {self.lower_bound:+.4f})"


def cold_margin(chosen: str, per_user: dict[str, np.ndarray]) -> Margin | None:
    """:class:`Margin` of scorer ``chosen`` over the best other of ``per_user`` (name -> per-user
    pseudo-cold Recall@20, the same users in the same order; None: no other, no user, or a
    figure that is a mean, not per user)."""
    from recall_pipeline.core.recall.route_selection import paired_gain

    others = {name: recalls for name, recalls in per_user.items() if name != chosen}
    if not others or any(np.ndim(recalls) != 1 for recalls in per_user.values()) or not len(per_user[chosen]):
        return None
    runner_up = max(others, key=lambda name: others[name].mean())
    gain, lower = paired_gain(per_user[chosen], others[runner_up])
    return Margin(runner_up, gain, lower)


def tune(fit_train: sp.csr_matrix, features: np.ndarray, judge, lambdas=LAMBDA_GRID,
         alphas=ALPHA_GRID, blends=BLEND_GRID, views: dict | None = None, compare=None) -> Tuned:
    """Fit every (lam, alpha) on ``fit_train`` and keep the one ``judge`` (a model -> pseudo-cold
    Recall@20, per user or its mean) scores highest; then, at that setting, every blend with the
    LM's own view (:func:`blended`; 0: TextCF alone, 1: the LM alone). Then TextCF so blended
    against each LM view of ``views`` (name -> its pseudo-cold Recall@20, per user or its mean,
    :data:`LM_PROFILE` and :data:`LM_INTEREST`), TextCF judged by ``compare`` (default ``judge``),
    on the users the views were judged on: the best serves, so the cold scorer is never below
    any single scorer judged here on pseudo-cold validation. Ties keep the earlier setting
    (smaller lam, smaller alpha, smaller blend, TextCF before an LM view). Where every figure is
    per user, the choice's :class:`Margin` over the next best scorer comes with it."""
    per_setting = {(lam, alpha): judge(fit(fit_train, features, lam, alpha)) for alpha in alphas for lam in lambdas}
    grid = {setting: _mean(figure) for setting, figure in per_setting.items()}
    (lam, alpha), _ = max(grid.items(), key=lambda kv: kv[1])
    model = fit(fit_train, features, lam, alpha)
    per_blend = {b: (per_setting[(lam, alpha)] if b == 0 else judge(blended(model, fit_train, features, b)))
                 for b in blends}
    mixed = {b: _mean(figure) for b, figure in per_blend.items()}
    blend = max(mixed, key=lambda b: (mixed[b], -b))
    chosen = per_blend[blend] if compare is None else compare(blended(model, fit_train, features, blend))
    per_scorer = {TEXT_CF: chosen, **(views or {})}
    means = {name: _mean(figure) for name, figure in per_scorer.items()}
    scorer = max(means, key=means.get)
    return Tuned(lam, alpha, means[scorer], grid, blend, mixed, scorer, means, cold_margin(scorer, per_scorer))


def _mean(figure) -> float:
    """A judge's figure (per user, or already their mean) as a mean; no user: 0."""
    return float(np.mean(figure)) if np.size(figure) else 0.0


@dataclass(frozen=True)
class PseudoCold:
    """The protocol's rule 4 made from the training part alone: the pseudo-cold split's fit
    ``matrix`` (users ``user_ids``, its interaction rows ``fit_rows``), and the users at ``rows``
    (their ``relevant`` pseudo-cold items) who rank the pseudo-cold items at ``columns``."""

    matrix: sp.csr_matrix
    rows: np.ndarray
    columns: np.ndarray
    relevant: sp.csr_matrix
    user_ids: np.ndarray | None = None
    fit_rows: pl.DataFrame | None = None

    def sampled(self, max_cells: int, items_per_user: int) -> PseudoCold:
        """A seeded sample of these users (``protocol.sampled_slice``: all of them within
        ``max_cells`` users x ``items_per_user``), the same fit matrix and items."""
        from recall_pipeline.core.evaluation.protocol import Slice, sampled_slice

        kept = sampled_slice(Slice("cold", self.rows, self.relevant), items_per_user, max_cells)
        return replace(self, rows=kept.rows, relevant=kept.relevant)

    def recall(self, model: TextCF, features: np.ndarray) -> float:
        """``model``'s pseudo-cold Recall@20 over ``features`` (:meth:`recalls`' mean)."""
        return float(self.recalls(model, features).mean()) if len(self.rows) else 0.0

    def recalls(self, model: TextCF, features: np.ndarray) -> np.ndarray:
        """``model``'s pseudo-cold Recall@20 of each user at ``rows``, scoring only the
        pseudo-cold items' columns (:meth:`recalls_of`)."""
        if not len(self.rows):
            return np.zeros(0)
        queries = model.user_queries(self.matrix, features, self.rows)
        cold_features = np.ascontiguousarray(features[self.columns].T)
        return self.recalls_of(lambda block: queries[block] @ cold_features)

    def recalls_of(self, score_cold) -> np.ndarray:
        """Pseudo-cold Recall@20 of each user at ``rows`` under ``score_cold`` (positions into
        ``rows`` -> their scores of the pseudo-cold items, in ``columns`` order): the protocol's
        cold ranking (``protocol.cold_ranked``: the pseudo-cold items alone, same seeded ties)."""
        from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts
        from recall_pipeline.core.evaluation.protocol import COLD_K, cold_top_k

        if not len(self.rows):
            return np.zeros(0)
        lists, _ = cold_top_k(score_cold, np.arange(len(self.rows)), len(self.columns))
        hits = hit_matrix(lists, self.relevant)
        return recall_at_k(hits, relevant_counts(self.relevant), COLD_K)


def pseudo_cold(train_split: pl.DataFrame, item_ids: np.ndarray) -> PseudoCold:
    """:class:`PseudoCold` of ``train_split``'s training part (``core.features.split.pseudo_cold_split``),
    so that a choice made with it never reads the test split. Above
    ``protocol.MAX_EVALUATION_CELLS`` pseudo-cold users x pseudo-cold items (the cells its
    scorers rank), on a seeded sample of those users, as the evaluation's cold slice is."""
    from recall_pipeline.core.evaluation.protocol import MAX_EVALUATION_CELLS, build_evaluation_data
    from recall_pipeline.core.features.rating_matrix import build_rating_matrix
    from recall_pipeline.core.features.split import pseudo_cold_split

    pseudo = pseudo_cold_split(train_split.filter(pl.col("part") == "train"))
    rm = build_rating_matrix(pseudo, item_ids)
    data = build_evaluation_data(pseudo, rm, max_cells=MAX_EVALUATION_CELLS)
    return PseudoCold(rm.matrix, data.cold.rows, data.cold_columns, data.cold.relevant, rm.user_ids,
                      pseudo.filter(pl.col("part") == "train").select(train_split.columns))


def pseudo_cold_judge(train_split: pl.DataFrame, item_ids: np.ndarray, features: np.ndarray):
    """(the pseudo-cold split's fit matrix, a model -> its pseudo-cold Recall@20 over
    ``features``): :func:`pseudo_cold` for one feature set."""
    split = pseudo_cold(train_split, item_ids)
    return split.matrix, lambda model: split.recall(model, features)


def view_user_recalls(split: PseudoCold, views: dict[str, tuple[np.ndarray, np.ndarray]],
                      item_vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Each LM view's pseudo-cold Recall@20 of each user at ``split.rows``: ``views`` maps a name
    to (owner user ids, vectors), the vectors of the pseudo-cold users built from
    ``split.fit_rows`` alone (several per user allowed: an item scores its best); users without
    one tie at zero."""
    from recall_pipeline.core.recall.routes import interest_scorer

    out = {}
    cold_vectors = np.asarray(item_vectors[split.columns], dtype=np.float32)
    for name, (owners, vectors) in views.items():
        sampled = np.isin(owners, split.user_ids[split.rows])
        rows = np.searchsorted(split.user_ids, owners[sampled])
        score = interest_scorer(len(split.user_ids), rows, vectors[sampled], cold_vectors)
        out[name] = split.recalls_of(lambda block, score=score: score(split.rows[block]))
    return out


def pseudo_cold_views(split: PseudoCold, items: pl.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray,
                      encoder: str, encode, settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The LM views (:data:`LM_PROFILE`, :data:`LM_INTEREST`: owner user ids, vectors) of the
    sampled pseudo-cold users, built as ``user_profiles`` builds them (``settings``: its
    ``ProfileSettings``; ``encode``: the LM, for the interest texts) from the pseudo-cold fit
    rows alone, so no pseudo-cold interaction shapes the view judged on it."""
    from recall_pipeline.core.features.user_profiles import interest_vectors, profile_tables

    if not len(split.rows):  # no pseudo-cold user to judge on (a tiny catalogue): TextCF serves
        return {}
    users = split.user_ids[split.rows]
    rows = split.fit_rows.filter(pl.col("user_id").is_in(pl.Series(users)))
    profiles, interests = profile_tables(rows, items, item_ids, item_vectors, encoder, encode, settings)
    owners, vectors = interest_vectors(interests, profiles)
    history = np.asarray(profiles["embedding"].to_list(), dtype=np.float32).reshape(profiles.height, item_vectors.shape[1])
    return {LM_PROFILE: (profiles["user_id"].to_numpy(), history), LM_INTEREST: (owners, vectors)}


def choose(train_split: pl.DataFrame, items: pl.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray,
           encoder: str, encode, settings) -> tuple[Tuned, PseudoCold]:
    """(the cold scorer chosen on pseudo-cold validation items of ``train_split``'s training part,
    the pseudo-cold split it was judged on): TextCF's setting and blend (:func:`tune`) on a
    sample of the pseudo-cold users bounded as the warm slice is (users x every item: the grid
    and the blends judge TextCF 19 times), then TextCF so blended against the LM views
    (:func:`pseudo_cold_views`, :func:`view_user_recalls`) on all of them, with the choice's
    :class:`Margin` over the next best. At 1M items that is 2,000 users for the grid and about
    28,000 for the comparison: on 2,000 the scorers' lead was within the noise."""
    from recall_pipeline.core.evaluation.protocol import MAX_EVALUATION_CELLS

    features = item_features(item_vectors)
    split = pseudo_cold(train_split, item_ids)
    grid_users = split.sampled(MAX_EVALUATION_CELLS, len(item_ids))
    views = pseudo_cold_views(split, items, item_ids, item_vectors, encoder, encode, settings)
    tuned = tune(split.matrix, features, lambda model: grid_users.recalls(model, features),
                 views=view_user_recalls(split, views, item_vectors),
                 compare=None if len(grid_users.rows) == len(split.rows) else (lambda model: split.recalls(model, features)))
    return tuned, split


def untrained(train: sp.csr_matrix, item_ids: np.ndarray) -> np.ndarray:
    """The ids of the items without a training interaction (the cold items)."""
    return np.asarray(item_ids)[np.diff(sp.csc_matrix(train).indptr) == 0]


def save(model: TextCF, path: Path, encoder: str, tuned: Tuned | None = None) -> None:
    """Write the model as ``.npz`` (no pickle) beside ``path`` and rename it onto ``path``, so a
    reader sees the previous model or this one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"lam": model.lam, "alpha": model.alpha, "encoder": encoder, "fit_run": model.fit_run,
            "blend": model.blend, "cold_scorer": model.cold_scorer,
            "pseudo_cold_recall@20": tuned.recall if tuned else None,
            "pseudo_cold_margin": asdict(tuned.margin) if tuned and tuned.margin else None}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), weights=model.weights, untrained_ids=_storable(model.untrained_ids))
    os.replace(tmp, path)


def _storable(ids: np.ndarray) -> np.ndarray:
    """Text ids (an object array) as fixed-width unicode: ``.npz`` without pickle cannot hold objects."""
    ids = np.asarray(ids)
    return ids.astype(str) if ids.dtype == object else ids


def load(path: Path, encoder: str) -> TextCF | None:
    """The stored model (None: none stored yet); refuses one fitted on another encoder's
    vectors (its weights act on that encoder's feature space)."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        meta, weights, ids = json.loads(str(stored["meta"])), stored["weights"], stored["untrained_ids"]
    if encoder != ANY_ENCODER and meta["encoder"] != encoder:
        raise ValueError(f"{path}: fitted on item vectors of {meta['encoder']}, the catalogue's are "
                         f"{encoder}; re-materialize text_cf_model")
    return TextCF(weights, meta["lam"], meta["alpha"], ids, meta["fit_run"], meta.get("blend", 0.0),
                  meta.get("cold_scorer", TEXT_CF))
