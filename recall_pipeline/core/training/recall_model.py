"""The recall model's life cycle around ``two_tower``: the training data from the protocol's
split, training with progress logged, saving, registering, and judging a new version against
the champion on training data alone (:func:`judge`: never the test split)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.checksums import frame_sha256
from recall_pipeline.core.evaluation.baselines import validation_recall
from recall_pipeline.core.evaluation.protocol import validation_matrices
from recall_pipeline.core.features.rating_matrix import RatingMatrix, build_rating_matrix
from recall_pipeline.core.recall.ranking import top_k_scored
from recall_pipeline.core.recall.route_selection import selection_rows
from recall_pipeline.core.recall.routes import RouteSettings
from recall_pipeline.core.recall.validation_routes import save_model_lists
from recall_pipeline.core.scoring import Scorer
from recall_pipeline.core.training import model_registry, route_trust, two_tower
from recall_pipeline.core.training.model_registry import Judgement
from recall_pipeline.core.training.training_pairs import holdout_less_pairs, read_training_pairs, save_training_pairs

SEQUENCE_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
VALIDATION_COLUMNS = (*SEQUENCE_COLUMNS, "val_part", "is_relevant")


class ModelSettings(NamedTuple):
    """What one training of the recall model is given: the model's architecture (saved with it)
    and the run's training settings (``two_tower.settings``); one object for the asset's config,
    the MLflow parameters and ``train``."""

    architecture: two_tower.Architecture = two_tower.Architecture()
    training: two_tower.TrainingSettings = two_tower.TrainingSettings()


def settings_from(params: dict) -> ModelSettings:
    """Both halves from one flat dict of overrides (the asset's config, a bench variant)."""
    halves = (two_tower.Architecture, two_tower.TrainingSettings)
    names = [{f.name for f in fields(half)} for half in halves]
    unknown = set(params).difference(*names)
    if unknown:
        raise ValueError(f"unknown two-tower settings {sorted(unknown)}; known: {sorted(set().union(*names))}")
    return ModelSettings(*(half(**{k: v for k, v in params.items() if k in known})
                           for half, known in zip(halves, names)))


def flat_params(settings: ModelSettings) -> dict[str, str]:
    """The MLflow run's parameters: every field of both halves by its own name."""
    return {name: str(value) for half in settings for name, value in asdict(half).items()}


def training_sequences(split: pl.DataFrame, rm: RatingMatrix) -> two_tower.Sequences:
    """All training interactions as sequences (what serving and the final fit use)."""
    train = split.filter(pl.col("part") == "train").select(SEQUENCE_COLUMNS)
    return two_tower.build_sequences(train, rm.user_ids, rm.item_ids)


def fit_sequences(split: pl.DataFrame, rm: RatingMatrix) -> two_tower.Sequences:
    """The validation cut's fit part as sequences (what early stopping trains on)."""
    return two_tower.build_sequences(split.filter(pl.col("val_part") == "fit").select(SEQUENCE_COLUMNS),
                                     rm.user_ids, rm.item_ids)


def train(split: pl.DataFrame, rm: RatingMatrix, lm_vectors: np.ndarray,
          settings: ModelSettings, log: Callable[[dict], None] = lambda entry: None,
          lm_top=None) -> two_tower.TrainingResult:
    """Early-stop on the validation cut of training, then refit on all of training (``lm_top``:
    the LM's top layers, when ``settings.training.lm_finetune_layers`` > 0)."""
    fit = fit_sequences(split, rm)
    _, holdout = validation_matrices(split, rm)
    return two_tower.train_two_tower(lm_vectors, training_sequences(split, rm), fit, holdout,
                                     settings.architecture, settings.training, log, lm_top,
                                     list_rows=selection_rows(holdout, seed=settings.training.seed),
                                     list_depth=RouteSettings.depth)


def epoch_logger(info: Callable[[str], None], tracker) -> Callable[[dict], None]:
    """Progress to the run's log and per-epoch metrics to the active MLflow run."""

    def log(entry: dict) -> None:
        line = f"{entry['phase']} epoch {entry['epoch']}: loss {entry['loss']:.4f}"
        metrics = {f"{entry['phase']}_loss": entry["loss"]}
        if "validation_recall@50" in entry:
            line += f", validation Recall@50 {entry['validation_recall@50']:.4f}"
            metrics["validation_recall_at_50"] = entry["validation_recall@50"]
        info(f"{line} ({entry['seconds']:.0f}s)")
        tracker.log_metrics(metrics, step=entry["epoch"])

    return log


def data_snapshot(split: pl.DataFrame) -> dict:
    """What a training used: training row, user and item counts, a checksum of the rows, and a
    checksum of the validation cut it was early-stopped on (which rows are fit / held out and
    which held-out rows are relevant): two versions with the same ``validation_sha256`` were
    measured on the same validation data."""
    train = split.filter(pl.col("part") == "train").select(VALIDATION_COLUMNS)
    ordered = train.sort("user_id", "timestamp", "item_id", "val_part")
    return {"train_rows": train.height, "train_users": train["user_id"].n_unique(),
            "train_items": train["item_id"].n_unique(),
            "train_sha256": frame_sha256(ordered.select(SEQUENCE_COLUMNS)),
            model_registry.VALIDATION_CUT: frame_sha256(ordered)}


def retrain_not_needed(tracking_uri: str, champion: str | None, train_rows: int, encoder: str,
                       min_new_interactions: int) -> str:
    """Why training can be skipped ('' when it cannot): the champion exists, was trained on the
    same encoder, and training grew by fewer than ``min_new_interactions`` since."""
    if min_new_interactions <= 0 or champion is None:
        return ""
    tags = model_registry.client(tracking_uri).get_model_version(model_registry.MODEL_NAME, champion).tags
    if tags.get("encoder") != encoder or "train_rows" not in tags:
        return ""
    new = train_rows - int(tags["train_rows"])
    if new >= min_new_interactions or new < 0:  # fewer rows: the data changed, not grew
        return ""
    return (f"not retrained: {new} new training interactions since champion v{champion} "
            f"(threshold {min_new_interactions}); v{champion} keeps serving")


@dataclass(frozen=True)
class Outcome:
    """A registered version and what the champion rule decided."""

    promotion: model_registry.Promotion
    champion: str
    best_epoch: int
    validation_recall: float
    validation_sha256: str

    def row(self, dagster_run_id: str, mlflow_run_id: str) -> pl.DataFrame:
        """One row of DuckDB ``models.versions``: the version, its validation figure and cut,
        which data judged it against the champion, both figures there, and the decision."""
        p, j = self.promotion, self.promotion.judgement
        return pl.DataFrame([{
            "version": p.version, "dagster_run_id": dagster_run_id, "mlflow_run_id": mlflow_run_id,
            "best_epoch": self.best_epoch, "validation_recall_at_50": self.validation_recall,
            "validation_sha256": self.validation_sha256, "judged_on": j.judged_on,
            "judged_users": j.users, "judged_interactions": j.interactions,
            "judged_recall_at_50": j.candidate_value, "champion_before": p.champion_before,
            "champion_judged_recall_at_50": j.champion_value, "promoted": p.promoted,
            "champion_after": self.champion, "decision": p.reason,
            "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}],
            schema_overrides={"champion_before": pl.String, "judged_recall_at_50": pl.Float64,
                              "champion_judged_recall_at_50": pl.Float64, "judged_users": pl.Int64,
                              "judged_interactions": pl.Int64})


def training_part(split: pl.DataFrame) -> pl.DataFrame:
    """The split's training rows: everything the champion rule may read."""
    return split.filter(pl.col("part") == "train")


@dataclass(frozen=True)
class ValidationPhase:
    """The validation cut's fit part as a rating matrix, its held-out relevance, and the
    version's early-stopping model as a dense scorer over the fit histories: what the trust and
    the stored validation lists are both computed from (built once: at L its user and item
    vectors and matrices took about 20 s)."""

    fit: RatingMatrix
    holdout: sp.csr_matrix
    scorer: Scorer


def validation_phase(result: two_tower.TrainingResult, split: pl.DataFrame, rm: RatingMatrix) -> ValidationPhase:
    """The :class:`ValidationPhase` of ``result`` on ``split``'s validation cut."""
    train = training_part(split)
    fit_rows = train.filter(pl.col("val_part") == "fit").with_columns(part=pl.lit("train"))
    fit = build_rating_matrix(fit_rows, rm.item_ids, rm.user_ids)
    _, holdout = validation_matrices(train, rm)
    model = result.validation_model if result.validation_model is not None else result.model
    return ValidationPhase(fit, holdout, two_tower.dense_scorer(model, fit_sequences(train, rm), len(rm.user_ids)))


def trust_of(phase: ValidationPhase, lm_vectors: np.ndarray,
             training: two_tower.TrainingSettings = two_tower.TrainingSettings()) -> route_trust.Trust:
    """The version's trust factor in the fused lists (``core.training.route_trust``), from its
    early-stopping model on the validation cut, with the validation's sample of users."""
    return route_trust.two_tower_trust(phase.scorer, phase.fit, two_tower.validation_sample(phase.holdout, training),
                                       lm_vectors)


def validation_lists(phase: ValidationPhase, rm: RatingMatrix, depth: int = RouteSettings.depth,
                     seed: int = 0, cross_fitted: tuple[np.ndarray, np.ndarray] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, their lists): the top ``depth`` items on the validation cut for the users the
    fusion is chosen on (``route_selection.selection_rows``), stored with the version so that
    each run's choice can weigh the two-tower route without retraining. A user whose lists
    early stopping cross-fitted (``cross_fitted``: rows, lists; ``two_tower.early_stopping``)
    has those; any other, the early-stopping model's."""
    rows = selection_rows(phase.holdout, seed=seed)
    fitted_rows, fitted = cross_fitted if cross_fitted is not None else (np.empty(0, np.int64), None)
    known = np.isin(rows, fitted_rows)
    lists = np.full((len(rows), depth), -1, dtype=np.int64)
    if (~known).any():
        lists[~known], _ = top_k_scored(phase.scorer, rows[~known], depth, len(rm.item_ids), phase.fit.matrix, seed)
    if known.any():
        lists[known] = fitted[np.searchsorted(fitted_rows, rows[known]), :depth]
    return rm.user_ids[rows], lists


def register_and_judge(result: two_tower.TrainingResult, split: pl.DataFrame, rm: RatingMatrix,
                       item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str, folder: Path,
                       tracking_uri: str, mlflow_run_id: str, tags: dict[str, str],
                       training: two_tower.TrainingSettings = two_tower.TrainingSettings(),
                       trust: float = 1.0, model_lists: tuple[np.ndarray, np.ndarray] | None = None) -> Outcome:
    """Save and register the trained model (with its ``trust`` factor, which the recall reads
    from the saved model), judge it against the champion on training data alone
    (:func:`judge`) and move the alias if the new version is at least as good."""
    train = training_part(split)  # nothing below sees a test row
    two_tower.save_model(result.model, item_ids, folder, {
        "encoder": encoder, "best_epoch": result.best_epoch,
        "validation_recall_at_50": result.best_validation_recall, route_trust.CONFIG_KEY: float(trust)})
    save_training_pairs(train, folder)
    snapshot = data_snapshot(train)
    if model_lists is not None:
        save_model_lists(folder, *model_lists, item_ids, snapshot[model_registry.VALIDATION_CUT])
    champion = model_registry.champion_version(tracking_uri)
    version = model_registry.register_version(tracking_uri, mlflow_run_id, folder, {
        **tags, model_registry.VALIDATION_CUT: snapshot[model_registry.VALIDATION_CUT],
        model_registry.VALIDATION_METRIC: repr(float(result.best_validation_recall))})
    judgement = judge(result, train, rm, item_ids, lm_vectors, encoder, tracking_uri, champion, training)
    promotion = model_registry.apply_champion_rule(tracking_uri, version, judgement)
    return Outcome(promotion, model_registry.champion_version(tracking_uri) or version,
                   result.best_epoch, result.best_validation_recall, snapshot[model_registry.VALIDATION_CUT])


def judge(result: two_tower.TrainingResult, train: pl.DataFrame, rm: RatingMatrix, item_ids: np.ndarray,
          lm_vectors: np.ndarray, encoder: str, tracking_uri: str, champion: str | None,
          training: two_tower.TrainingSettings = two_tower.TrainingSettings()) -> Judgement:
    """The candidate (``result``) against the champion version, on training data alone.

    ``train`` is the split's training part with its validation cut; test rows, if any are
    passed, are dropped first. The first version has nothing to be judged against; a champion
    trained on another encoder cannot serve these embeddings and loses. When the champion was
    measured on the same validation cut (same checksum), the two versions' validation Recall@50
    (each from its early-stopping phase: trained on the fit part, scored on the holdout) are
    compared. Otherwise new feedback changed the cut: the candidate's early-stopping model
    (trained on the current fit part only) and the champion are both scored on the current
    holdout less every (user, item) pair the champion trained on, each user's history being
    the current fit part, so that neither is scored on anything it trained on; on a large
    catalogue both on the same seeded sample of those users (``training``'s validation caps)."""
    train = training_part(train)
    own = Judgement(model_registry.FIRST_VERSION, float(result.best_validation_recall))
    if champion is None:
        return own
    tags = model_registry.version_tags(tracking_uri, champion)
    if tags.get("encoder") not in (None, encoder):
        return Judgement(model_registry.OTHER_ENCODER, own.candidate_value)
    _, holdout = validation_matrices(train, rm)
    if (tags.get(model_registry.VALIDATION_CUT) == data_snapshot(train)[model_registry.VALIDATION_CUT]
            and model_registry.VALIDATION_METRIC in tags):
        return Judgement(model_registry.SAME_CUT, own.candidate_value, float(tags[model_registry.VALIDATION_METRIC]),
                         *_counts(holdout))
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        folder = model_registry.download(tracking_uri, champion, Path(tmp))
        champion_model = serving_or_none(folder, item_ids, lm_vectors, encoder)
        pairs = read_training_pairs(folder, train)
    if champion_model is None:
        return Judgement(model_registry.OTHER_ENCODER, own.candidate_value)
    judged = holdout_less_pairs(train, pairs)
    fit_matrix, holdout = validation_matrices(judged, rm)
    holdout = two_tower.validation_sample(holdout, training)
    users, interactions = _counts(holdout)
    if not users:
        return Judgement(model_registry.FRESH_HOLDOUT, None, None, 0, 0)
    fit = fit_sequences(judged, rm)
    candidate = result.validation_model if result.validation_model is not None else result.model

    def score(model: two_tower.TwoTower) -> float:
        return validation_recall(two_tower.dense_scorer(model, fit, len(rm.user_ids)), fit_matrix, holdout)

    return Judgement(model_registry.FRESH_HOLDOUT, score(candidate), score(champion_model), users, interactions)


def rejudge(train: pl.DataFrame, rm: RatingMatrix, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str,
            tracking_uri: str, candidates: int = 3,
            training: two_tower.TrainingSettings = two_tower.TrainingSettings()) -> model_registry.Rejudgement:
    """The champion and the ``candidates`` newest other versions judged again on today's
    training data: each served model (trained on all of its own training part) is scored on the
    current validation holdout less every (user, item) pair any of them trained on, each user's
    history being the current fit part, so that no version is scored on anything it trained on
    and all on the same users (a seeded sample on a large catalogue). A champion that was
    promoted by a cut-short refit, or on a cut that has moved since, is judged here like the
    others. A version trained on another encoder, or saved without its training pairs, is
    skipped, with the reason. Nothing here reads a test row."""
    train = training_part(train)
    champion = model_registry.champion_version(tracking_uri)
    others = [v for v in model_registry.versions(tracking_uri) if v != champion][:candidates]
    models, pairs, skipped = {}, [], {}
    with tempfile.TemporaryDirectory(prefix="rejudge-") as tmp:
        for version in ([champion] if champion else []) + others:
            folder = model_registry.download(tracking_uri, version, Path(tmp) / version)
            model, trained_on = serving_or_none(folder, item_ids, lm_vectors, encoder), read_training_pairs(folder, train)
            if model is None or trained_on is None:
                skipped[version] = "trained on another encoder" if model is None else "no training pairs stored"
                continue
            models[version] = model
            pairs.append(trained_on)
    if not models:
        return model_registry.Rejudgement({}, 0, 0, champion, champion, skipped)
    judged = holdout_less_pairs(train, pl.concat(pairs))
    fit_matrix, holdout = validation_matrices(judged, rm)
    holdout = two_tower.validation_sample(holdout, training)
    users, interactions = _counts(holdout)
    if not users:
        return model_registry.Rejudgement({}, 0, 0, champion, champion,
                                          {**skipped, "all": "no held-out interaction that none of them trained on"})
    fit = fit_sequences(judged, rm)
    values = {version: validation_recall(two_tower.dense_scorer(model, fit, len(rm.user_ids)), fit_matrix, holdout)
              for version, model in models.items()}
    return model_registry.Rejudgement(values, users, interactions, champion,
                                      model_registry.rejudged_champion(values, champion), skipped)


def _counts(holdout) -> tuple[int, int]:
    """(held-out users with a relevant interaction, relevant held-out interactions)."""
    return int((np.diff(holdout.indptr) > 0).sum()), int(holdout.nnz)


def serving_or_none(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray,
                    encoder: str) -> two_tower.TwoTower | None:
    """The saved model over the current catalogue; None if it was trained on another encoder."""
    try:
        return two_tower.load_for_catalogue(folder, item_ids, lm_vectors, encoder)
    except two_tower.EncoderMismatchError:
        return None


@dataclass(frozen=True)
class TrainingInputs:
    """What one training reads: the protocol's split, the rating matrix, and the catalogue's
    LM embeddings (in the rating matrix's item order) with the key of the encoder that made them."""

    split: pl.DataFrame
    rm: RatingMatrix
    item_ids: np.ndarray
    lm_vectors: np.ndarray
    encoder: str

    @property
    def train_rows(self) -> int:
        return self.split.filter(pl.col("part") == "train").height


def train_and_register(inputs: TrainingInputs, settings: ModelSettings, folder: Path,
                       tracking_uri: str, tracker, mlflow_run_id: str, dagster_run_id: str,
                       info: Callable[[str], None], lm_top=None,
                       ) -> tuple[two_tower.TrainingResult, Outcome, route_trust.Trust]:
    """One training inside the active MLflow run (``tracker``): parameters and data snapshot
    logged, per-epoch progress logged, the trust factor chosen, the model saved to ``folder``,
    registered and judged."""
    snapshot = data_snapshot(inputs.split)
    tracker.log_params({**flat_params(settings), **snapshot, "encoder": inputs.encoder})
    result = train(inputs.split, inputs.rm, inputs.lm_vectors, settings, log=epoch_logger(info, tracker),
                   lm_top=lm_top)
    info(f"refit {result.refit}")
    phase = validation_phase(result, inputs.split, inputs.rm)
    trust = trust_of(phase, inputs.lm_vectors, settings.training)
    info(f"trust in the fused lists: {trust.factor} (validation Recall@50 by factor: {trust.recall})")
    model_lists = validation_lists(phase, inputs.rm, seed=settings.training.seed, cross_fitted=result.cross_fitted)
    del phase  # its users x dim and items x dim vectors
    outcome = register_and_judge(
        result, inputs.split, inputs.rm, inputs.item_ids, inputs.lm_vectors, inputs.encoder, folder, tracking_uri,
        mlflow_run_id, tags={"dagster_run_id": dagster_run_id, "encoder": inputs.encoder,
                             route_trust.CONFIG_KEY: str(trust.factor),
                             **{k: str(v) for k, v in snapshot.items()}}, training=settings.training,
        trust=trust.factor, model_lists=model_lists)
    judgement = outcome.promotion.judgement
    tracker.log_metrics({"best_epoch": result.best_epoch, "best_validation_recall_at_50": result.best_validation_recall,
                         "train_seconds": result.seconds, route_trust.CONFIG_KEY: trust.factor,
                         **{name: value for name, value in (
                             (model_registry.JUDGED_METRIC, judgement.candidate_value),
                             (f"champion_{model_registry.JUDGED_METRIC}", judgement.champion_value))
                            if value is not None}})
    tracker.set_tags({"judged_on": judgement.judged_on, "champion_decision": outcome.promotion.reason,
                      "served_phase": result.served, "refit": result.refit})
    return result, outcome, trust

