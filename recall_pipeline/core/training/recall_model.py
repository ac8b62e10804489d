"""The recall model's life cycle around ``two_tower``: the training data from the protocol's
split, training with progress logged, saving, registering, and judging a new version against
the champion on the same split."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from recall_pipeline.core.training import model_registry

from recall_pipeline.core.training import two_tower
from recall_pipeline.core.evaluation.protocol import (
    EvaluationData, build_evaluation_data, main_metric, validation_matrices,
)
from recall_pipeline.core.checksums import frame_sha256
from recall_pipeline.core.ids import storable_ids
from recall_pipeline.core.features.rating_matrix import RatingMatrix

SEQUENCE_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


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


def train(split: pl.DataFrame, rm: RatingMatrix, lm_vectors: np.ndarray,
          settings: ModelSettings, log: Callable[[dict], None] = lambda entry: None,
          lm_top=None) -> two_tower.TrainingResult:
    """Early-stop on the validation cut of training, then refit on all of training (``lm_top``:
    the LM's top layers, when ``settings.training.lm_finetune_layers`` > 0)."""
    fit = two_tower.build_sequences(split.filter(pl.col("val_part") == "fit").select(SEQUENCE_COLUMNS),
                                    rm.user_ids, rm.item_ids)
    _, holdout = validation_matrices(split, rm)
    return two_tower.train_two_tower(lm_vectors, training_sequences(split, rm), fit, holdout,
                                     settings.architecture, settings.training, log, lm_top)


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
    """What a training used: training row, user and item counts and a checksum of the rows."""
    train = split.filter(pl.col("part") == "train").select(SEQUENCE_COLUMNS)
    return {"train_rows": train.height, "train_users": train["user_id"].n_unique(),
            "train_items": train["item_id"].n_unique(),
            "train_sha256": frame_sha256(train.sort("user_id", "timestamp", "item_id"))}


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

    def row(self, dagster_run_id: str, mlflow_run_id: str) -> pl.DataFrame:
        """One row of DuckDB ``models.versions``."""
        p = self.promotion
        return pl.DataFrame([{
            "version": p.version, "dagster_run_id": dagster_run_id, "mlflow_run_id": mlflow_run_id,
            "best_epoch": self.best_epoch, "validation_recall_at_50": self.validation_recall,
            "warm_recall_at_50": p.candidate_value, "champion_before": p.champion_before,
            "champion_warm_recall_at_50": p.champion_value, "promoted": p.promoted,
            "champion_after": self.champion, "decision": p.reason,
            "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}],
            schema_overrides={"champion_before": pl.String, "champion_warm_recall_at_50": pl.Float64})


def version_score(model: two_tower.TwoTower, sequences: two_tower.Sequences, data: EvaluationData) -> float:
    """A model's warm Recall@50 under the protocol (the champion rule's figure)."""
    return main_metric(two_tower.dense_scorer(model, sequences, len(data.rm.user_ids)), data)


TRAINING_PAIRS_FILE = "training_pairs.npz"


def save_training_pairs(split: pl.DataFrame, folder: Path) -> None:
    """The (user, item) pairs the model trained on, beside it: a later comparison must not
    score it on interactions it saw (a changed split can move them into the test part)."""
    train = split.filter(pl.col("part") == "train").select("user_id", "item_id").unique()
    np.savez_compressed(folder / TRAINING_PAIRS_FILE, user_id=storable_ids(train["user_id"].to_numpy()),
                        item_id=storable_ids(train["item_id"].to_numpy()))


def unseen_by(split: pl.DataFrame, folder: Path) -> pl.DataFrame:
    """``split`` without the warm-test rows whose (user, item) the model in ``folder`` trained on."""
    path = folder / TRAINING_PAIRS_FILE
    if not path.exists():
        return split
    with np.load(path, allow_pickle=False) as stored:
        seen = pl.DataFrame({"user_id": stored["user_id"], "item_id": stored["item_id"]}).cast(
            {"user_id": split.schema["user_id"], "item_id": split.schema["item_id"]})
    leaked = split.filter(pl.col("part") == "warm_test").join(seen, on=["user_id", "item_id"], how="semi")
    return split.join(leaked.select("user_id", "item_id", "part"), on=["user_id", "item_id", "part"], how="anti")


def register_and_judge(result: two_tower.TrainingResult, split: pl.DataFrame, rm: RatingMatrix,
                       item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str, folder: Path,
                       tracking_uri: str, mlflow_run_id: str, tags: dict[str, str]) -> Outcome:
    """Save and register the trained model, measure it and the champion on the same split (less
    any test interaction the champion trained on), and move the alias if the new version is at
    least as good."""
    two_tower.save_model(result.model, item_ids, folder, {
        "encoder": encoder, "best_epoch": result.best_epoch,
        "validation_recall_at_50": result.best_validation_recall})
    save_training_pairs(split, folder)
    version = model_registry.register_version(tracking_uri, mlflow_run_id, folder, tags)
    sequences, champion = training_sequences(split, rm), model_registry.champion_version(tracking_uri)
    judged, champion_model = split, None
    if champion is not None:
        judged, champion_model = fetch_champion(tracking_uri, champion, split, item_ids, lm_vectors, encoder)
    data = build_evaluation_data(judged, rm)
    champion_value = None
    if champion is not None:  # a champion that cannot serve these embeddings loses
        champion_value = (float("-inf") if champion_model is None
                          else version_score(champion_model, sequences, data))
    candidate = version_score(result.model, sequences, data)
    promotion = model_registry.apply_champion_rule(tracking_uri, version, candidate, champion_value)
    return Outcome(promotion, model_registry.champion_version(tracking_uri) or version,
                   result.best_epoch, result.best_validation_recall)


def fetch_champion(tracking_uri: str, champion: str, split: pl.DataFrame, item_ids: np.ndarray,
                   lm_vectors: np.ndarray, encoder: str) -> tuple[pl.DataFrame, two_tower.TwoTower | None]:
    """(the split without the test interactions the champion trained on, the champion over the
    current catalogue or None when it was trained on another encoder); the download is removed."""
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        folder = model_registry.download(tracking_uri, champion, Path(tmp))
        return unseen_by(split, folder), serving_or_none(folder, item_ids, lm_vectors, encoder)


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
                       info: Callable[[str], None], lm_top=None) -> tuple[two_tower.TrainingResult, Outcome]:
    """One training inside the active MLflow run (``tracker``): parameters and data snapshot
    logged, per-epoch progress logged, the model saved to ``folder``, registered and judged."""
    snapshot = data_snapshot(inputs.split)
    tracker.log_params({**flat_params(settings), **snapshot, "encoder": inputs.encoder})
    result = train(inputs.split, inputs.rm, inputs.lm_vectors, settings, log=epoch_logger(info, tracker),
                   lm_top=lm_top)
    outcome = register_and_judge(
        result, inputs.split, inputs.rm, inputs.item_ids, inputs.lm_vectors, inputs.encoder, folder, tracking_uri,
        mlflow_run_id, tags={"dagster_run_id": dagster_run_id, "encoder": inputs.encoder,
                             **{k: str(v) for k, v in snapshot.items()}})
    tracker.log_metrics({"best_epoch": result.best_epoch, "best_validation_recall_at_50": result.best_validation_recall,
                         "train_seconds": result.seconds, model_registry.MAIN_METRIC: outcome.promotion.candidate_value})
    return result, outcome

