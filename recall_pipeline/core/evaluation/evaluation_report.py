"""What the ``evaluation_report`` asset computes: the published lists, each recall route alone
and the CF baselines scored under the protocol on one split, and the figures shaped for the
warehouse, the asset page and MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import polars as pl

from recall_pipeline.core.evaluation import baselines
from recall_pipeline.core.evaluation.protocol import (
    BASELINE_VALIDATION_USERS, MAX_EVALUATION_CELLS, EvaluationData, Report, build_evaluation_data, evaluate,
)
from recall_pipeline.core.features.rating_matrix import RatingMatrix
from recall_pipeline.core.features.user_profiles import profile_scorer
from recall_pipeline.core.ids import positions
from recall_pipeline.core.recall.list_rows import lists_from_frame, vectors_by_user
from recall_pipeline.core.recall.routes import LMView, RouteSettings, ease_route_scorer, interest_scorer
from recall_pipeline.core.scoring import on_columns, with_columns
from recall_pipeline.core.training.ease.model import EaseModel
from recall_pipeline.core.training.text_cf import TEXT_CF, TextCF, item_features
from recall_pipeline.core.training.training_pairs import test_rows_trained_on, without

# What cleaning held back, stored beside the figures as rows of model "data", slice "ingest", k 0.
INGEST_MODEL, INGEST_SLICE = "data", "ingest"
INGEST_COUNTS = ("quarantined_rows", "suspected_burst_rows")
# Users scored per slice (EvaluationData.sample_rows), counts too.
USER_COUNTS = tuple(f"{name}_{what}" for name in ("warm", "sparse", "cold") for what in ("scored", "in_slice"))
# Novelty is in bits (-log2 of a share), not a share, and the ingest and user rows are counts:
# the only figures not bounded by 1.
UNBOUNDED = ("novelty", *INGEST_COUNTS, *USER_COUNTS)
HEADLINE = {("warm", "recall", 50), ("warm", "ndcg", 10), ("warm", "coverage", 50),
            ("cold", "recall", 20), ("sparse", "recall", 50)}


@dataclass(frozen=True)
class EvaluationInputs:
    """Everything one evaluation reads, aligned on the rating matrix's axes."""

    split: pl.DataFrame             # features.interactions_split
    rm: RatingMatrix
    candidates: pl.DataFrame        # the published lists (recall.latest): user_id, rank, item_id, route
    candidates_run_id: str          # the recall run that computed them and the model version it
    candidates_model_version: str   # served (one per run: not a column of 20M rows at L)
    item_vectors: np.ndarray        # LM embeddings in the rating matrix's item order
    genres: list[list[str]]         # per item, same order
    profiles: pl.DataFrame          # user_id, embedding (history vectors)
    interest_owners: np.ndarray     # user id of each interest vector
    interests: np.ndarray
    two_tower: baselines.Scorer     # the serving model version as a dense scorer
    text_cf: TextCF | None = None   # the stored TextCF model: its cold scorer is final's when present
    ease: EaseModel | None = None   # the EASE model the published lists used (None: fitted here on rm)
    serving_pairs: pl.DataFrame | None = None  # the (user, item) pairs the serving version trained on
    quarantined: pl.DataFrame | None = None  # reason, rows: quarantine.interactions by reason
    route_settings: RouteSettings = field(default_factory=RouteSettings)  # those the published run used


def ingest_rows(quarantined: pl.DataFrame | None) -> list[dict]:
    """The interaction rows cleaning quarantined and, of those, the suspected bursts' (feedback
    attacks, ``core.ingest.bursts``), as metric rows of model "data", slice "ingest", k 0."""
    from recall_pipeline.core.ingest.bursts import REASON

    counts = dict(quarantined.iter_rows()) if quarantined is not None else {}
    values = {"quarantined_rows": sum(counts.values()), "suspected_burst_rows": counts.get(REASON, 0)}
    return [{"model": INGEST_MODEL, "slice": INGEST_SLICE, "metric": metric, "k": 0, "value": float(value)}
            for metric, value in values.items()]


def route_scorers(inputs: EvaluationInputs) -> dict[str, baselines.Scorer]:
    """Each recall route as a dense scorer, so that each can be evaluated alone: the EASE route
    is the model the published lists used (after a feedback refresh, the one of the full refresh
    it reused, not a refit on today's matrix), with the published run's recency weighting."""
    rm, vectors = inputs.rm, inputs.item_vectors
    profiles = inputs.profiles
    user_vectors = vectors_by_user(rm, profiles["user_id"].to_numpy(),
                                   profiles["embedding"].to_numpy().reshape(profiles.height, vectors.shape[1]))
    interests = lm_views(inputs)["lm_interest"]
    routes = {"two_tower": inputs.two_tower, "lm_profile": profile_scorer(user_vectors, vectors),
              "lm_interest": interest_scorer(len(rm.user_ids), interests.owners, interests.vectors, vectors),
              "ease": ease_route_scorer(rm, inputs.route_settings, inputs.ease)}
    if inputs.text_cf is not None:  # as the route serves it: only the items untrained when it was fitted
        routes["text_cf"] = only_proposed(text_cf_scorer(inputs), np.isin(rm.item_ids, inputs.text_cf.untrained_ids))
    return routes


def only_proposed(scorer: baselines.Scorer, proposed: np.ndarray) -> baselines.Scorer:
    """``scorer`` with every item it does not propose (``proposed`` False) at -inf."""
    return with_columns(lambda rows: np.where(proposed, scorer(rows), -np.inf),
                        lambda columns: only_proposed(on_columns(scorer, columns), proposed[columns]))


def lm_views(inputs: EvaluationInputs) -> dict[str, LMView]:
    """The users' LM views as the routes see them (rows of the rating matrix): the history
    profile (``lm_profile``) and the interest vectors (``lm_interest``)."""
    rm, profiles = inputs.rm, inputs.profiles
    return {"lm_profile": LMView(positions(rm.user_ids, profiles["user_id"].to_numpy(), "profile users"),
                                 profiles["embedding"].to_numpy().reshape(profiles.height, inputs.item_vectors.shape[1])),
            "lm_interest": LMView(positions(rm.user_ids, inputs.interest_owners, "interest users"), inputs.interests)}


def text_cf_scorer(inputs: EvaluationInputs) -> baselines.Scorer | None:
    """The stored TextCF model's cold scorer (TextCF, or the LM view it chose on pseudo-cold
    validation) as a dense scorer over every item (None: no model stored)."""
    model = inputs.text_cf
    if model is None:
        return None
    if model.cold_scorer == TEXT_CF:
        return model.scorer(inputs.rm.matrix, item_features(inputs.item_vectors))
    view = lm_views(inputs)[model.cold_scorer]
    return interest_scorer(len(inputs.rm.user_ids), view.owners, view.vectors, inputs.item_vectors)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: the report, the protocol data it scored, and the test rows it left out
    because the serving model trained on them before the split moved (:func:`judged_split`)."""

    report: Report
    data: EvaluationData
    excluded_test_rows: pl.DataFrame

    @property
    def exclusion_note(self) -> str:
        """What was done about test rows the serving model trained on, for the report and metadata."""
        if self.excluded_test_rows.is_empty():
            return "none: the serving model trained on no row of the test parts"
        parts = dict(self.excluded_test_rows.group_by("part").len().iter_rows())
        listed = ", ".join(f"{n} {part}" for part, n in sorted(parts.items()))
        return (f"{self.excluded_test_rows.height} test rows left out of every model's figures ({listed}): the "
                f"serving model trained on them before new data moved the split (no retraining since)")


def judged_split(split: pl.DataFrame, serving_pairs: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the split every model is scored on, the test rows left out): after a refresh that did
    not retrain, the split can have moved pairs the serving model trained on into a test part;
    those rows leave the test parts for every model, so no figure rewards memory."""
    moved = test_rows_trained_on(split, serving_pairs)
    return without(split, moved), moved


def evaluate_published(inputs: EvaluationInputs, with_baselines: bool,
                       max_cells: int | None = MAX_EVALUATION_CELLS,
                       baseline_users: int = BASELINE_VALIDATION_USERS) -> Evaluation:
    """The protocol's figures for the published lists (cold slice: the stored TextCF model's
    cold scorer, or without one the two-tower model, ranking the cold items from their text), every route alone and, if asked, the baselines, on the
    split less any test row the serving model trained on, each slice on a seeded sample of its
    users above ``max_cells`` (``protocol.sampled_slice``); then how many users each slice's
    figures rest on (``EvaluationData.sample_rows``) and the counts of what cleaning held back
    (:func:`ingest_rows`)."""
    split, moved = judged_split(inputs.split, inputs.serving_pairs)
    data = build_evaluation_data(split, inputs.rm, inputs.genres, inputs.item_vectors, max_cells)
    report = evaluate(split, data, lists_from_frame(inputs.rm, inputs.candidates),
                      final_cold=text_cf_scorer(inputs) or inputs.two_tower, routes=route_scorers(inputs),
                      with_baselines=with_baselines, baseline_users=baseline_users)
    report.rows.extend(data.sample_rows())
    report.rows.extend(ingest_rows(inputs.quarantined))
    return Evaluation(report, data, moved)


def metrics_frame(evaluation: Evaluation, run_id: str, inputs: EvaluationInputs) -> pl.DataFrame:
    """``eval.metrics`` rows of this run, naming the model version and lists they score, and how
    many test rows were left out of the figures (``test_rows_excluded``, see :func:`judged_split`)."""
    return pl.DataFrame(evaluation.report.rows).select(
        pl.lit(run_id).alias("run_id"), pl.lit(inputs.candidates_model_version).alias("model_version"), pl.all(),
        pl.lit(inputs.candidates_run_id).alias("candidates_run_id"),
        pl.lit(evaluation.excluded_test_rows.height, pl.Int64).alias("test_rows_excluded"),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("created_at"))


def cold_rankings_frame(evaluation: Evaluation, run_id: str) -> pl.DataFrame:
    """``eval.cold_rankings`` rows of this run: the cold ranking ``final``'s cold figures score
    (run_id, user_id, rank from 1, item_id, score), one row per listed item."""
    rm, ranking = evaluation.data.rm, evaluation.report.cold_ranking
    rows = ranking.rows if ranking is not None else np.zeros(0, np.int64)
    items = ranking.items if ranking is not None else np.zeros((0, 0), np.int64)
    scores = ranking.scores if ranking is not None else np.zeros((0, 0))
    user, position = np.nonzero(items >= 0)
    return pl.DataFrame({
        "run_id": pl.Series([run_id] * len(user), dtype=pl.String),
        "user_id": pl.Series(rm.user_ids[rows[user]], dtype=_id_type(rm.user_ids)),
        "rank": pl.Series(position + 1, dtype=pl.Int32),
        "item_id": pl.Series(rm.item_ids[items[user, position]], dtype=_id_type(rm.item_ids)),
        "score": pl.Series(scores[user, position], dtype=pl.Float64)})


def comparisons_frame(evaluation: Evaluation, run_id: str, inputs: EvaluationInputs) -> pl.DataFrame:
    """``eval.comparisons`` rows of this run: ``final`` against every route and baseline, user by
    user on the same users (``Report.comparisons``): gain, its 95% paired-bootstrap interval,
    and how many users it rests on."""
    schema = {"model": pl.String, "against": pl.String, "slice": pl.String, "metric": pl.String, "k": pl.Int64,
              "gain": pl.Float64, "lower": pl.Float64, "upper": pl.Float64, "users": pl.Int64}
    return pl.DataFrame(evaluation.report.comparisons(), schema=schema).select(
        pl.lit(run_id).alias("run_id"), pl.lit(inputs.candidates_model_version).alias("model_version"), pl.all(),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("created_at"))


def _id_type(ids: np.ndarray):
    return pl.String if ids.dtype.kind in "OUS" else pl.Int64


def within_unit_interval(stored: pl.DataFrame) -> bool:
    """Every stored share or rate (all metrics but novelty) is in [0, 1], and there is one."""
    bounded = stored.filter(~pl.col("metric").is_in(UNBOUNDED))["value"]
    return bool(bounded.len() and bounded.is_between(0.0, 1.0).all())


def headline(rows: list[dict]) -> dict[str, float]:
    """The few figures worth plotting over time on the asset page."""
    return {f"{r['model']}/{r['slice']}/{r['metric']}@{r['k']}": round(r["value"], 4)
            for r in rows if (r["slice"], r["metric"], r["k"]) in HEADLINE}
