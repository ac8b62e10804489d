"""``route_settings``: the fusion each full refresh serves, chosen on its own validation cut."""

import dagster as dg
import polars as pl

from recall_pipeline.core.features.user_profiles import ProfileSettings
from recall_pipeline.core.recall import quality_gate, route_selection
from recall_pipeline.core.recall.chosen_settings import PINNED, SEARCHED, ChosenSettings, load_choice, save_choice
from recall_pipeline.core.recall.serving_version import ServingParts
from recall_pipeline.core.recall.routes import ROUTES, RouteSettings
from recall_pipeline.core.recall.validation_routes import validation_routes
from recall_pipeline.defs import tables
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.sentences import keep_sentences, reusing_encoder
from recall_pipeline.resources import DataSource, MlflowTracking, PipelineHome, TextEncoderResource, Warehouse

DEFAULTS = RouteSettings()
GATE_CHECK = "lists_no_worse_than_published"


class RouteSettingsConfig(dg.Config):
    """The search's starting point (``search`` true) or the settings served as given (false:
    pinned, nothing searched): route weights, popularity discount, RRF constant, MMR lambda (not
    searched: the search ranks the fused order, lambda 1), the EASE route's recency weighting and
    windowed term, and each route's depth; the sample of held-out users, the time budget and the
    reach target."""

    search: bool = True
    weight_two_tower: float = DEFAULTS.weights["two_tower"]
    weight_ease: float = DEFAULTS.weights["ease"]
    weight_lm_profile: float = DEFAULTS.weights["lm_profile"]
    weight_lm_interest: float = DEFAULTS.weights["lm_interest"]
    weight_popularity: float = DEFAULTS.weights["popularity"]
    weight_text_cf: float = DEFAULTS.weights["text_cf"]
    popularity_discount: float = DEFAULTS.popularity_discount
    rrf_c: float = DEFAULTS.rrf_c
    mmr_lambda: float = DEFAULTS.mmr_lambda
    ease_recency_tau: float = DEFAULTS.ease_recency_tau   # 0: the history unweighted
    ease_recency_floor: float = DEFAULTS.ease_recency_floor
    ease_window: int = DEFAULTS.ease_window
    ease_window_weight: float = DEFAULTS.ease_window_weight  # 0: EASE without the windowed term
    depth: int = DEFAULTS.depth
    max_users: int = route_selection.DEFAULT_MAX_USERS
    time_budget_seconds: float = 120.0
    # the reach target: coverage@50 of the lists at least this many times plain EASE's (0: none)
    coverage_vs_plain_ease: float = route_selection.COVERAGE_VS_PLAIN_EASE
    # publish even if the lists' validation Recall@50 dropped beyond the noise against the
    # published version's (the quality gate; recall-pipeline run --accept-drop)
    accept_drop: bool = False

    def start(self) -> RouteSettings:
        return RouteSettings(
            depth=self.depth, weights={name: getattr(self, f"weight_{name}") for name in ROUTES},
            rrf_c=self.rrf_c, popularity_discount=self.popularity_discount, mmr_lambda=self.mmr_lambda,
            ease_recency_tau=self.ease_recency_tau, ease_recency_floor=self.ease_recency_floor,
            ease_window=self.ease_window, ease_window_weight=self.ease_window_weight)


@dg.asset(
    group_name="recall",
    deps=["rating_matrix", "item_embeddings", "cleaned_item_text", "faiss_index", "two_tower_index", "text_cf_model"],
    kinds={"numpy", "mlflow"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(GATE_CHECK, asset="route_settings", blocking=True,
                                   description="the quality gate: the lists' validation Recall@50 is not below the "
                                               "published version's beyond the noise (core/recall/quality_gate.py)")],
    description="The fusion the lists serve, chosen on this run's validation cut (core/recall/route_selection.py): "
                "every route built on the fit part and scored on the held-out part (a seeded sample of "
                "users), then a coordinate search over the EASE variant (recency, windowed term, each "
                "on or off), every route's weight, the popularity discount and the RRF constant, under "
                "floors on NDCG@10 (0.95x, beyond the noise, the best of the routes whose validation recall the best "
                "route does not beat beyond the noise), coverage@50 and long-tail share (plain EASE's); unless "
                "the fusion beats that route beyond a paired bootstrap's noise, that route serves alone. "
                "The test split is never read. Stored at models/route_settings/route_settings.json with "
                "every candidate's figures and logged to MLflow; ease_model and recall_candidates use it, "
                "feedback refreshes reuse it. Config search=false pins the given settings. The quality gate "
                "(blocking check lists_no_worse_than_published) stops the refresh when the lists' validation "
                "Recall@50 drops beyond the noise against the published version's (config accept_drop).",
)
def route_settings(context: dg.AssetExecutionContext, config: RouteSettingsConfig, warehouse: Warehouse,
                   home: PipelineHome, encoder: TextEncoderResource, data_source: DataSource,
                   mlflow: MlflowTracking) -> dg.MaterializeResult:
    run_id, start, published = context.run.run_id, config.start(), _published_choice(home)
    if not config.search and published is None:  # pinned, and nothing to compare with
        save_choice(home.layout.route_settings, ChosenSettings(start, PINNED, run_id, {}))
        context.log.info("route settings pinned by config: no search")
        gate = quality_gate.nothing_to_compare("no published version yet")
        return dg.MaterializeResult(metadata={"how": PINNED, "settings": dg.MetadataValue.json(start.to_json())},
                                    check_results=[_gate_check(gate)])
    inputs, encode = tables.selection_inputs(warehouse, home), reusing_encoder(encoder, home, "route_settings")
    routes, left_out = validation_routes(
        inputs.train, inputs.catalogue, start, encode, ProfileSettings(rating_max=data_source.rating_max),
        inputs.text_cf_setting, inputs.model_lists, inputs.cut, config.max_users,
        also=published.settings if published else None, search=config.search)
    sentences = keep_sentences(context, encode)
    if not config.search:
        ours = _served_figures(routes, start, inputs)
        save_choice(home.layout.route_settings, ChosenSettings(start, PINNED, run_id, _gated_record({}, ours)))
        gate = _gate(context, published, ours, routes, inputs, config.accept_drop)
        return dg.MaterializeResult(metadata={"how": PINNED, "settings": dg.MetadataValue.json(start.to_json()),
                                              **sentences}, check_results=[_gate_check(gate)])
    selection = route_selection.select(routes, start, inputs.trust, config.time_budget_seconds,
                                       config.coverage_vs_plain_ease)
    ours = _served_figures(routes, selection.settings, inputs)
    record = _gated_record({**selection.record(), "left_out": left_out, "two_tower_trust": inputs.trust}, ours)
    save_choice(home.layout.route_settings, ChosenSettings(selection.settings, SEARCHED, run_id, record))
    gate = _gate(context, published, ours, routes, inputs, config.accept_drop)
    context.log.info(f"route settings: {selection.decision}; {len(selection.candidates)} candidates in "
                     f"{selection.seconds:.1f} s on {selection.users} users; left out: {left_out or 'none'}")
    with mlflow.start_run("route_settings", {"dagster_run_id": run_id}) as (tracker, mlflow_run):
        tracker.log_params({"decision": selection.decision[:250], **_flat(selection.settings)})
        tracker.log_metrics({**_metrics("chosen", selection.chosen),
                             **{k: v for name, f in selection.routes.items() if name.isidentifier()
                                for k, v in _metrics(f"route_{name}", f).items()},
                             "search_seconds": selection.seconds, "candidates": len(selection.candidates)})
        tracker.log_dict(record, "route_selection.json")
    if not selection.users:
        return dg.MaterializeResult(metadata={"how": SEARCHED, "decision": selection.decision, "users": 0, **sentences},
                                    check_results=[_gate_check(gate)])
    candidates = pl.DataFrame(selection.candidates).sort("recall@50", descending=True)
    return dg.MaterializeResult(metadata={
        "how": SEARCHED, "decision": selection.decision, "best_route": selection.best_route,
        "validation_recall@50": dg.MetadataValue.float(selection.chosen["recall@50"]),
        "validation_ndcg@10": dg.MetadataValue.float(selection.chosen["ndcg@10"]),
        "best_route_recall@50": dg.MetadataValue.float(selection.best_route_figures["recall@50"]),
        "gain_lower_bound": dg.MetadataValue.float(selection.gain_lower),
        "users": selection.users, **sentences, "search_seconds": dg.MetadataValue.float(round(selection.seconds, 2)),
        "budget_reached": selection.budget_reached, "left_out": dg.MetadataValue.json(left_out),
        "pruned_weights": dg.MetadataValue.json(selection.pruned_weights),
        "settings": dg.MetadataValue.json(_flat(selection.settings)),
        "routes": markdown_table(pl.DataFrame([{"route": n, **f} for n, f in selection.routes.items()])),
        "candidates": markdown_table(candidates, rows=25),
        "mlflow_run_id": mlflow_run.info.run_id,
    }, check_results=[_gate_check(gate)])


def _published_choice(home: PipelineHome) -> ChosenSettings | None:
    """The route settings (and their validation record) of the current serving version."""
    version = home.layout.serving.current_or_none()
    return load_choice(ServingParts.of_version(version).route_settings) if version is not None else None


def _served_figures(routes, settings: RouteSettings, inputs) -> quality_gate.UserFigures | None:
    """Per-user validation Recall@50 of the lists ``settings`` fuse (None: no held-out user)."""
    if not routes.users:
        return None
    return quality_gate.UserFigures(inputs.cut, routes.user_ids,
                                    route_selection.score(routes, settings, inputs.trust).per_user_recall)


def _gated_record(record: dict, ours: quality_gate.UserFigures | None) -> dict:
    """``record`` with the served lists' per-user figures: what the next run's gate compares with."""
    return {**record, "validation_users": ours.to_json() if ours else None}


def _gate(context: dg.AssetExecutionContext, published: ChosenSettings | None,
          ours: quality_gate.UserFigures | None, routes, inputs, accept_drop: bool) -> quality_gate.GateResult:
    """The quality gate of ``ours`` (the served lists' figures) against the current serving
    version (``core.recall.quality_gate``)."""
    gate = quality_gate.against_published(ours, published, inputs.cut,
                                          lambda settings: _served_figures(routes, settings, inputs), accept_drop)
    (context.log.info if gate.passed and not gate.accepted else context.log.warning)(f"quality gate: {gate.message}")
    return gate


def _gate_check(gate: quality_gate.GateResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=GATE_CHECK, passed=gate.passed, description=gate.message,
                               metadata={**gate.as_metadata(), "message": gate.message})


def _metrics(prefix: str, figures: dict[str, float]) -> dict[str, float]:
    """Validation figures as MLflow metric names ("@" is not allowed in one)."""
    return {f"{prefix}_{name.replace('@', '_at_')}": value for name, value in figures.items()}


def _flat(settings: RouteSettings) -> dict:
    """The searched settings as flat name -> value pairs (MLflow parameters, asset metadata)."""
    return {**{f"weight_{name}": settings.weights.get(name, 1.0) for name in ROUTES},
            "popularity_discount": settings.popularity_discount, "rrf_c": settings.rrf_c,
            "ease_recency_tau": settings.ease_recency_tau, "ease_window_weight": settings.ease_window_weight}
