"""``ease_model``: the EASE route's item-to-item model, solved once per full refresh."""

import dataclasses
import time

import dagster as dg
import numpy as np

from recall_pipeline.core.recall.chosen_settings import load_choice
from recall_pipeline.core.recall.routes import RouteSettings, fit_ease_route
from recall_pipeline.core.training.ease.store import load_ease, save_ease
from recall_pipeline.defs import tables
from recall_pipeline.resources import PipelineHome, Warehouse

ASSET = "ease_model"
CHECK = "ease_model_fits_catalogue"


class EaseModelConfig(dg.Config):
    """The item cap above which EASE is solved over the most-interacted items. EASE's
    regularisation ``lam`` and the windowed term (items taken up at most ``window`` places apart,
    at ``window_weight`` times EASE's spread; 0: EASE alone) are what ``route_settings`` chose on
    the validation cut, unless given here."""

    lam: float | None = None
    max_items: int = RouteSettings.ease_max_items
    window: int | None = None
    window_weight: float | None = None

    def settings(self, chosen: RouteSettings) -> RouteSettings:
        pinned = {"ease_lambda": self.lam, "ease_window": self.window, "ease_window_weight": self.window_weight}
        return dataclasses.replace(chosen, ease_max_items=self.max_items,
                                   **{name: value for name, value in pinned.items() if value is not None})


@dg.asset(
    group_name="training",
    deps=["rating_matrix", "route_settings"],
    kinds={"numpy"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(CHECK, asset=ASSET, blocking=True,
                                   description="the stored model reads back, covers the catalogue it was "
                                               "fitted on and scores a sample of users with finite values")],
    description="EASE (core/training/ease/): item-to-item collaborative filtering in closed form over "
                "the training matrix, plus a term for items taken up near each other in time. Stored "
                "atomically at models/ease/ease.npz with the item counts of its fit; recall_candidates "
                "scores every user with it and publishes it in the run's serving version (serving/), "
                "which feedback refreshes and ad-hoc recall reuse.",
)
def ease_model(context: dg.AssetExecutionContext, config: EaseModelConfig, warehouse: Warehouse,
               home: PipelineHome) -> dg.MaterializeResult:
    choice = load_choice(home.layout.route_settings)
    rm, path = tables.rating_matrix(warehouse), home.layout.ease_model
    settings = config.settings(choice.settings if choice else RouteSettings())
    started = time.monotonic()
    model = fit_ease_route(rm, settings)
    seconds = time.monotonic() - started
    save_ease(model, path, rm.item_ids, context.run.run_id, settings.ease_max_items, rm.item_counts())
    stored = load_ease(path)
    why = stored.matches(rm.item_ids, settings.ease_lambda, settings.ease_max_items, settings.ease_window,
                         settings.ease_window_weight)
    sample = np.flatnonzero(np.diff(rm.matrix.indptr) > 0)[:64]
    scores = stored.model.scores(rm.matrix[sample])
    finite = bool(np.isfinite(scores[scores != -np.inf]).all())
    context.log.info(f"EASE: {stored.model.form}, {rm.matrix.shape[1]} items, {seconds:.1f} s")
    return dg.MaterializeResult(
        metadata={"lambda": settings.ease_lambda, "form": stored.model.form, "items": int(rm.matrix.shape[1]),
                  "window": settings.ease_window, "window_weight": settings.ease_window_weight,
                  "fit_seconds": dg.MetadataValue.float(round(seconds, 2)),
                  "path": dg.MetadataValue.path(str(path))},
        check_results=[dg.AssetCheckResult(check_name=CHECK, passed=why is None and finite,
                                           metadata={"mismatch": why or "none", "finite_scores": finite,
                                                     "users_scored": len(sample)})],
    )
