"""Every recall route's lists on the validation cut: what the fusion is chosen on.

The protocol's rule 4: each route is built from the *fit* part of training (EASE and TextCF
fitted on it; the LM profiles and interests from it; the two-tower version's early-stopping
model, trained on it, whose lists the recall model stores with the version) and its lists are
scored against the *held-out* part, for a seeded sample of the held-out users
(``route_selection.selection_rows``). The routes run through the same code as the nightly lists
(``routes.route_lists``, ``routes.ease_route``), so the lists chosen on are the lists served.
Nothing here reads the test split: the caller passes the training part only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import head_items, hit_matrix, recall_at_k, relevant_counts
from recall_pipeline.core.evaluation.protocol import EASE_GRID, validation_matrices
from recall_pipeline.core.features.rating_matrix import RatingMatrix, build_rating_matrix
from recall_pipeline.core.features.user_profiles import ProfileSettings, interest_vectors, profile_tables
from recall_pipeline.core.ids import storable_ids
from recall_pipeline.core.recall.route_selection import (
    EaseVariant, ValidationRoutes, ease_variants, plain_ease, selection_rows,
)
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings, TextCFRoute, ease_route, route_lists
from recall_pipeline.core.training import text_cf
from recall_pipeline.core.training.ease import windowed as windowed_ease
from recall_pipeline.core.training.ease.model import EaseModel, EaseSolver

MODEL_LISTS_FILE = "validation_lists.npz"


@dataclass(frozen=True)
class ModelLists:
    """A two-tower version's lists on its validation cut: per sampled user (``user_ids``), its
    early-stopping model's top items (``items``: item ids, ``valid`` marks the listed entries),
    and the checksum of the cut (``recall_model.data_snapshot``) they belong to."""

    user_ids: np.ndarray
    items: np.ndarray
    valid: np.ndarray
    cut: str


def save_model_lists(folder: Path, user_ids: np.ndarray, lists: np.ndarray, item_ids: np.ndarray, cut: str) -> None:
    """Store ``lists`` (positions into ``item_ids``, -1 padded) of ``user_ids`` in ``folder``."""
    valid = lists >= 0
    items = np.asarray(item_ids)[np.where(valid, lists, 0)]
    tmp = folder / f".{MODEL_LISTS_FILE}.{os.getpid()}.tmp"
    with tmp.open("wb") as handle:
        np.savez(handle, user_ids=storable_ids(user_ids), items=storable_ids(items), valid=valid,
                 meta=np.array(json.dumps({"cut": cut})))
    os.replace(tmp, folder / MODEL_LISTS_FILE)


def load_model_lists(folder: Path) -> ModelLists | None:
    """The lists a version stored (None: a version saved before versions stored them)."""
    path = folder / MODEL_LISTS_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return ModelLists(stored["user_ids"], stored["items"], stored["valid"], json.loads(str(stored["meta"]))["cut"])


def placed_model_lists(stored: ModelLists | None, cut: str, user_ids: np.ndarray, item_ids: np.ndarray,
                       depth: int) -> tuple[np.ndarray | None, str]:
    """(the stored two-tower lists as positions of the current catalogue for ``user_ids``, in
    that order, or None; why not). Usable only when made on this very validation cut, for these
    users: a version trained on another cut (or before versions stored lists) is not searched."""
    if stored is None:
        return None, "the serving version stored no validation lists (trained by an earlier release)"
    if stored.cut != cut:
        return None, "the serving version was validated on another cut (new data since it was trained)"
    index = {str(u): i for i, u in enumerate(stored.user_ids)}
    picked = [index.get(str(u)) for u in user_ids]
    if any(p is None for p in picked):
        return None, "the serving version's validation lists cover other users"
    order = np.argsort(item_ids)
    out = np.full((len(user_ids), depth), -1, dtype=np.int64)
    items, valid = stored.items[picked][:, :depth], stored.valid[picked][:, :depth]
    found = np.searchsorted(np.asarray(item_ids)[order], items.astype(np.asarray(item_ids).dtype), side="left")
    found = np.minimum(found, len(order) - 1)
    known = valid & (np.asarray(item_ids)[order][found] == items.astype(np.asarray(item_ids).dtype))
    out[:, :items.shape[1]] = np.where(known, order[found], -1)
    return out, ""


@dataclass(frozen=True)
class Catalogue:
    """The items the routes rank: ids (sorted), LM vectors in that order, the encoder's key,
    the LM FAISS index over them, and the items' text fields (item_id, title, year, genres)."""

    item_ids: np.ndarray
    item_vectors: np.ndarray
    encoder: str
    lm_index: object
    items: pl.DataFrame


def fit_matrix(train: pl.DataFrame, item_ids: np.ndarray) -> tuple[RatingMatrix, sp.csr_matrix]:
    """(the fit part as a rating matrix over every training user, the held-out relevance on its axes)."""
    train = train.filter(pl.col("part") == "train")
    user_ids = np.sort(train["user_id"].unique().to_numpy())
    fit = build_rating_matrix(train.filter(pl.col("val_part") == "fit"), item_ids, user_ids)
    return fit, validation_matrices(train, fit)[1]


def validation_routes(train: pl.DataFrame, catalogue: Catalogue, start: RouteSettings,
                      encode: Callable[[list[str]], np.ndarray] | None, profile_settings: ProfileSettings,
                      text_cf_setting: tuple[float, float, float, str] | None, model_lists: ModelLists | None, cut: str,
                      max_users: int, also: RouteSettings | None = None,
                      search: bool = True) -> tuple[ValidationRoutes, dict[str, str]]:
    """Every route's lists on the validation cut of ``train`` (the split's training part with
    ``val_part`` and ``is_relevant``), and why any route is left out. ``text_cf_setting``: the
    stored TextCF model's (lambda, alpha, blend, cold scorer), refitted on the fit part (None: no TextCF route).
    ``also``: other settings to score on the same lists (the published version's, for the quality
    gate): their EASE variant's lists are kept apart, never searched. ``search`` False (pinned
    settings): the EASE route under the start's variant alone, no regularisation grid."""
    fit, holdout = fit_matrix(train, catalogue.item_ids)
    rows = selection_rows(holdout, max_users, seed=start.seed)
    counts = fit.item_counts()
    if not len(rows):  # nothing held out to choose on (a tiny catalogue)
        return ValidationRoutes({}, {EaseVariant.of(start): np.zeros((0, start.depth), dtype=np.int64)}, holdout[rows],
                                counts, head_items(counts, fit.item_ids), start.seed), {"all": "no held-out user"}
    users = fit.user_ids[rows]
    fit_rows = train.filter((pl.col("val_part") == "fit") & pl.col("user_id").is_in(users)).with_columns(part=pl.lit("train"))
    profiles, interests = profile_tables(fit_rows, catalogue.items, catalogue.item_ids, catalogue.item_vectors,
                                         catalogue.encoder, encode, profile_settings)
    owners, vectors = interest_vectors(interests, profiles)
    features = text_cf.item_features(catalogue.item_vectors)
    cold = None
    if text_cf_setting is not None:
        lam, alpha, blend, scorer = text_cf_setting
        model = text_cf.fit_for_serving(fit.matrix, catalogue.item_ids, features, lam, alpha, "validation", blend,
                                        scorer)
        cold = TextCFRoute.build(model, features, catalogue.item_ids)
    others = dataclasses.replace(start, weights={name: 1.0 for name in ROUTES} | {"ease": 0.0, "two_tower": 0.0},
                                 compute_zero_weight_routes=False)
    embeddings = np.ascontiguousarray(profiles["embedding"].to_numpy(), dtype=np.float32).reshape(profiles.height, -1)
    lists = route_lists(catalogue.lm_index, catalogue.item_ids, fit, profiles["user_id"].to_numpy(), embeddings,
                        owners, vectors, others, rows=rows, text_cf=cold)
    lists.pop("ease")
    notes = {}
    lists["two_tower"], why = placed_model_lists(model_lists, cut, users, catalogue.item_ids, start.depth)
    if lists["two_tower"] is None:
        lists.pop("two_tower")
        notes["two_tower"] = why
    if cold is None:
        notes["text_cf"] = "no TextCF model stored"
    fits = EaseVariantLists(fit, start, rows)
    ease, by_lambda = ease_lists(fit, start, rows, holdout[rows], only_start=not search, shared=fits)
    extra = {}
    if also is not None and EaseVariant.of(also) not in ease:
        same_solve = (also.ease_max_items, also.seed, also.depth) == (start.ease_max_items, start.seed, start.depth)
        source = fits if same_solve else EaseVariantLists(fit, also, rows)
        extra = {EaseVariant.of(also): source.lists(EaseVariant.of(also))}
    del fits  # its items x items arrays
    notes_lambda = {f"plain EASE validation Recall@50 at lambda {lam:g}": round(v, 5) for lam, v in by_lambda.items()}
    return ValidationRoutes(lists={n: v for n, v in lists.items() if (v >= 0).any()}, ease=ease,
                            relevant=holdout[rows], item_counts=counts, head=head_items(counts, fit.item_ids),
                            seed=start.seed, lambdas=notes_lambda, user_ids=users, extra_ease=extra), notes


class EaseVariantLists:
    """The EASE route's lists for the sampled ``rows`` under any variant, sharing what variants
    have in common: one solver (the Gram matrix computed once), the plain models a variant
    extends, and the window's item pairs (the same for every regularisation), so that each
    regularisation costs one inverse, whichever settings (the grid, the variants, the
    published version's) ask for it. The windowed term is kept apart from B
    (``windowed.fit(fold=False)``): scoring a sample of users through it costs a fraction of
    folding it into B (an items x items product), with the same scores up to rounding."""

    def __init__(self, fit: RatingMatrix, start: RouteSettings, rows: np.ndarray):
        self.fit, self.start, self.rows = fit, start, rows
        self.has_history = rows[np.diff(fit.matrix.indptr)[rows] > 0]
        self.slot = np.searchsorted(rows, self.has_history)
        self.solver = EaseSolver(fit.matrix, start.ease_max_items)
        self.plain: dict[float, EaseModel] = {}
        self.models: dict[tuple[float, int, float], EaseModel] = {}
        self.pairs: dict[int, sp.csr_matrix | np.ndarray] = {}  # dense for the Gram and capped solves

    def lists(self, variant: EaseVariant) -> np.ndarray:
        """The route's top ``depth`` items per sampled user under ``variant`` (-1 padded)."""
        settings = variant.applied(self.start)
        lists = np.full((len(self.rows), settings.depth), -1, dtype=np.int64)
        if len(self.has_history):
            lists[self.slot] = ease_route(self.fit, settings, self.has_history, self.model(settings))
        return lists

    def model(self, settings: RouteSettings) -> EaseModel:
        lam, window, weight = settings.ease_lambda, settings.ease_window, settings.ease_window_weight
        term = (lam, window, weight)
        if term not in self.models:
            if lam not in self.plain:
                self.plain[lam] = self.solver.fit(lam)[1]
            base = self.plain[lam]
            pairs = None
            if weight > 0 and window > 0 and self.fit.recency is not None:
                if window not in self.pairs:
                    pairs = windowed_ease.window_pairs(self.fit, window, base.columns)
                    self.pairs[window] = pairs if base.form == "woodbury" else pairs.toarray()
                pairs = self.pairs[window]
            # the term kept apart: applied to the sampled users' histories, not folded into B
            self.models[term] = windowed_ease.fit(self.fit, lam, settings.ease_max_items, window, weight,
                                                  settings.seed, base=base, pairs=pairs, fold=False)
        return self.models[term]

    def forget(self, lam: float) -> None:
        """Drop plain EASE at ``lam`` (no variant will extend it): one items x items array less."""
        del self.plain[lam]
        self.models.pop((lam, 0, 0.0), None)


def ease_lists(fit: RatingMatrix, start: RouteSettings, rows: np.ndarray, relevant: sp.csr_matrix,
               only_start: bool = False,
               shared: EaseVariantLists | None = None) -> tuple[dict[EaseVariant, np.ndarray], dict[float, float]]:
    """(the EASE route's lists for ``rows`` under every variant, plain EASE's validation Recall@50
    by regularisation). The regularisation is plain EASE's best on these users over the
    baselines' grid (as the EASE baseline is tuned), then the variants
    (``route_selection.ease_variants``) are built at it: recency applied when scoring, the
    windowed term added to the plain model of its regularisation. One :class:`EaseVariantLists`
    serves the grid and the variants (``shared``: one the caller keeps, e.g. for the published
    version's settings); of the plain models only the start's and the best so far are kept.
    ``only_start``: the start's variant alone, no grid (pinned settings)."""
    fits = EaseVariantLists(fit, start, rows) if shared is None else shared
    if only_start:
        return {EaseVariant.of(start): fits.lists(EaseVariant.of(start))}, {}
    recall, out = {}, {}

    def best() -> float:
        return max(recall, key=lambda lam: (recall[lam], -abs(np.log(lam / start.ease_lambda))))

    for lam in sorted({*EASE_GRID, start.ease_lambda}):
        variant = plain_ease(start, lam)
        out[variant] = fits.lists(variant)
        recall[lam] = recall_at_50(out[variant], relevant)
        for gone in set(fits.plain) - {best(), start.ease_lambda}:  # a plain model no variant will extend
            fits.forget(gone)
    kept = set(ease_variants(start, best()))
    out = {v: lists for v, lists in out.items() if v in kept}
    for variant in ease_variants(start, best()):
        if variant not in out:
            out[variant] = fits.lists(variant)
    return out, recall


def recall_at_50(lists: np.ndarray, relevant: sp.csr_matrix) -> float:
    """Mean validation Recall@50 of ``lists`` (rows of ``relevant``)."""
    return float(recall_at_k(hit_matrix(lists[:, :50], relevant), relevant_counts(relevant), 50).mean())
