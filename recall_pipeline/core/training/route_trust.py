"""How much say a newly trained two-tower model gets in the fused lists, chosen on its own
validation cut.

The fusion's starting weights were chosen on the bundled data's validation cut
(``bench/tuning/tune_fusion.py``), where the two-tower model and the EASE route are about as good;
each full run then chooses its own weights (``route_settings``), scoring every candidate with
the serving version's trust applied, so the trust is the version's safeguard and the run's
choice is made on top of it. A model trained elsewhere may
not be (another catalogue, a time budget that stops it early, a poor setting), and fused 1:1
with EASE a weak model's lists push EASE's hits out: at L a barely trained model filled 78% of
the lists and brought warm Recall@50 from the EASE route's 0.22 to 0.03. So each version gets a
*trust* factor in ``FACTORS`` (the two-tower route's weight is ``weight_two_tower x trust``): the
largest factor whose fused lists, on the validation cut, have Recall@50 within ``MARGIN`` of the
best factor's. The lists fused are the two routes that vote by default, each built on the fit
part (the version's early-stopping model, trained on the fit part; the EASE route fitted on it)
and scored on the held-out part: never the test split. The served model is that early-stopping
model or its refit on all of training, which the champion rule already takes to be at least as
good.

It is a safeguard, not a second tuning: the weights were chosen under the lists' exposure goals,
and a smaller factor that wins by less than the noise between settings (about 0.005 Recall@50
on ~650 users) would trade coverage for nothing, so ``MARGIN`` is twice that. On the bundled
data the factors score from 0.349 (0) to 0.363 (0.25), and 1 (0.359) is kept; a model that only
hurts is turned off (0). The held-out users are those the early stopping chose the model's epoch
on, so its lists are, if anything, favoured here: the safeguard errs towards keeping the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts
from recall_pipeline.core.features.rating_matrix import RatingMatrix
from recall_pipeline.core.recall.ranking import top_k_scored
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings, ease_route, merge_routes

FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0)
CONFIG_KEY = "two_tower_trust"  # in the saved model's config, the version's MLflow tags and metrics
MARGIN = 0.01
K = 50


@dataclass(frozen=True)
class Trust:
    """The chosen factor and the validation Recall@50 of the fused lists at every factor."""

    factor: float
    recall: dict[float, float]
    users: int

    def as_metadata(self) -> dict[str, float]:
        return {f"trust_{factor}_recall@50": value for factor, value in self.recall.items()}


def two_tower_trust(two_tower_scorer, fit: RatingMatrix, holdout: sp.csr_matrix, item_vectors: np.ndarray,
                    settings: RouteSettings = RouteSettings()) -> Trust:
    """The trust factor of a model whose validation-phase scores are ``two_tower_scorer`` (rows
    of ``fit`` -> scores over its items), with ``fit`` the validation cut's fit part (recency
    included: the EASE route weighs it) and ``holdout`` its held-out relevance (a seeded sample
    of users at scale, as the validation scores)."""
    rows = np.flatnonzero(relevant_counts(holdout))
    if not len(rows) or settings.weights.get("two_tower", 0.0) <= 0:
        return Trust(1.0, {}, len(rows))
    n_items = len(fit.item_ids)
    model_lists, _ = top_k_scored(two_tower_scorer, rows, settings.depth, n_items, fit.matrix, settings.seed)
    lists = {"two_tower": model_lists, "ease": ease_route(fit, settings, rows)}
    counts, relevant = fit.item_counts(), holdout[rows]
    recall = {}
    for factor in FACTORS:
        weights = dict(settings.weights, two_tower=settings.weights["two_tower"] * factor)
        fused = merge_routes(lists, item_vectors, K, replace(settings, weights=weights), counts).items
        recall[factor] = float(recall_at_k(hit_matrix(fused, relevant), relevant_counts(relevant), K).mean())
    return Trust(chosen_factor(recall), recall, len(rows))


def chosen_factor(recall: dict[float, float]) -> float:
    """The largest factor whose validation Recall@50 is within ``MARGIN`` of the best."""
    best = max(recall.values())
    return max(factor for factor, value in recall.items() if value >= best - MARGIN)


def saved_trust(config: dict) -> float:
    """The trust factor in a saved model's config (1: a model saved before versions had one)."""
    return float(config.get(CONFIG_KEY, 1.0))


def trusted(settings: RouteSettings, factor: float) -> RouteSettings:
    """``settings`` with the two-tower route's weight scaled by the serving version's trust."""
    if factor == 1.0:
        return settings
    return replace(settings, weights=dict(settings.weights, two_tower=settings.weights.get("two_tower", 1.0) * factor))


def served(settings: RouteSettings, factor: float) -> RouteSettings:
    """The settings the lists are computed with: :func:`trusted`, except where the choice
    serves the two-tower route alone (every other route at 0 but popularity, which lists only
    for users without history). A factor cannot reorder one route's lists, and a factor of 0
    (a version promoted by a feedback refresh after the choice, whose trust was chosen on the
    default fusion) would leave every user with history without a list."""
    weights = settings.weights
    alone = weights.get("two_tower", 1.0) > 0 and all(
        weights.get(name, 1.0) <= 0 for name in ROUTES if name not in ("two_tower", "popularity"))
    return settings if alone else trusted(settings, factor)
