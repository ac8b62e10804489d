"""Reads of warehouse tables that several assets share, returned as numpy-ready objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recall_pipeline.core.evaluation.evaluation_report import EvaluationInputs
from recall_pipeline.core.features import user_profiles
from recall_pipeline.core.features.item_embeddings import as_matrix
from recall_pipeline.core.features.rating_matrix import RatingMatrix, read_rating_matrix
from recall_pipeline.core.ids import require_same_ids
from recall_pipeline.core.recall import incremental
from recall_pipeline.core.recall.index import read_index, read_manifest
from recall_pipeline.core.recall.recall_candidates import RecallInputs, two_tower_route
from recall_pipeline.core.recall.routes import RouteSettings
from recall_pipeline.core.recall.serving_version import ServingParts, read_manifest as read_version_manifest
from recall_pipeline.core.recall.validation_routes import Catalogue, ModelLists, load_model_lists
from recall_pipeline.core.training import text_cf
from recall_pipeline.core.training.ease.store import load_ease
from recall_pipeline.core.training.training_pairs import read_training_pairs
from recall_pipeline.resources import PipelineHome, Warehouse


def item_vectors(warehouse: Warehouse) -> tuple[np.ndarray, np.ndarray, str]:
    """Item ids (sorted), their embeddings and the model key that made them."""
    table = warehouse.query("select item_id, model, embedding from features.item_embeddings")
    models = table["model"].unique().to_list()
    if len(models) != 1:
        raise RuntimeError(f"features.item_embeddings mixes models {models}; re-materialize it")
    ids, vectors = as_matrix(table)
    return ids, vectors, models[0]


def item_texts(warehouse: Warehouse) -> pl.DataFrame:
    """The items' text fields the user profiles are written from (item_id, title, year, genres)."""
    return warehouse.query("select item_id, title, year, genres from clean.items")


def item_sides(warehouse: Warehouse) -> pl.DataFrame | None:
    """The item sides the previous split stored (None before the first split)."""
    if not warehouse.has_table("features.item_sides"):
        return None
    return warehouse.query("select * from features.item_sides order by item_id")


def rating_matrix(warehouse: Warehouse) -> RatingMatrix:
    """The training rating matrix as ``rating_matrix`` wrote it with the split."""
    with warehouse.connect() as con:
        return read_rating_matrix(con)


def interest_vectors(warehouse: Warehouse) -> tuple[np.ndarray, np.ndarray]:
    """(owner user id, vector) of every interest: the k-means interests and the encoded
    interest text of each profile (``user_profiles.interest_vectors``)."""
    return user_profiles.interest_vectors(
        warehouse.query("select user_id, embedding from features.user_interests"),
        warehouse.query("select user_id, interest_embedding from features.user_profiles"))


MODEL_FOLDER = "model"  # the serving model's folder inside a published two_tower_index version


def two_tower_model(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str):
    """The two-tower model stored in ``folder/model`` (``folder``: one published version, or the
    version being built) over the current catalogue (its item ids, LM embeddings and encoder
    key, as ``item_vectors`` returns them) and its serving item vectors; torch is imported only
    here."""
    from recall_pipeline.core.training import two_tower

    model = two_tower.load_for_catalogue(folder / MODEL_FOLDER, item_ids, lm_vectors, encoder)
    return model, two_tower.item_vectors(model)


def two_tower_index(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str):
    """(model, FAISS index, manifest) of one published two-tower version (``serving_folder``);
    refuses an index that was not built from this model's item vectors."""
    model, vectors = two_tower_model(folder, item_ids, lm_vectors, encoder)
    index, manifest = read_index(folder, read_manifest(folder).model, item_ids, vectors, "two_tower_index")
    return model, index, manifest


def serving_folder(home: PipelineHome) -> Path:
    """The published two-tower version that serves, resolved once: read the model and the index
    from this one folder, so they belong together (``NotPublishedError`` names the asset to
    materialize, also for a home still in the flat layout of an earlier version)."""
    return home.layout.two_tower_serving.current()


def staged_parts(home: PipelineHome) -> ServingParts:
    """The models as their assets last wrote them: what a full refresh's recall serves."""
    return home.layout.staged_parts(serving_folder(home))


def published_parts(home: PipelineHome, run_id: str) -> ServingParts:
    """The serving version of the published recall run ``run_id``: the models its lists were
    computed with. A home whose lists were published before serving versions existed has none:
    its staged models are read instead."""
    version = home.layout.serving.current_or_none()
    if version is None:
        return staged_parts(home)
    served = read_version_manifest(version)["run_id"]
    if served != run_id:
        raise RuntimeError(f"the serving version {version} is of run {served}, the published lists of run {run_id}: "
                           f"materialize recall_candidates to publish lists and models together")
    return ServingParts.of_version(version)


def training_rows(warehouse: Warehouse) -> pl.DataFrame:
    """The training part of the split, as the models read it."""
    return warehouse.query("select user_id, item_id, rating, timestamp, part from features.interactions_split "
                           "where part = 'train'")


def evaluation_inputs(warehouse: Warehouse, home: PipelineHome) -> EvaluationInputs:
    """What ``evaluation_report`` scores: the published lists, the split, the catalogue, the
    profiles and the models of the published serving version (the two-tower model, TextCF, the
    EASE model), checked to share the rating matrix's axes."""
    from recall_pipeline.core.training import recall_model, two_tower

    if not warehouse.has_table("recall.published_runs"):
        raise RuntimeError("no published recall lists yet; materialize recall_candidates first")
    rm, split = rating_matrix(warehouse), warehouse.query("select * from features.interactions_split")
    ids, vectors, encoder = item_vectors(warehouse)
    require_same_ids(rm.item_ids, ids, "item embeddings against the rating matrix's items")
    items = warehouse.query("select item_id, genres from clean.items order by item_id")
    require_same_ids(rm.item_ids, items["item_id"].to_numpy(), "clean.items against the rating matrix's items")
    run_id, model_version = warehouse.query(
        "select any_value(run_id), any_value(model_version) from recall.latest").row(0)
    parts = published_parts(home, run_id)  # the models the published lists were computed with
    model, _ = two_tower_model(parts.two_tower, ids, vectors, encoder)
    scorer = two_tower.dense_scorer(model, recall_model.training_sequences(split, rm), len(rm.user_ids))
    return EvaluationInputs(
        split=split, rm=rm, item_vectors=vectors, genres=items["genres"].to_list(), two_tower=scorer,
        text_cf=text_cf.load(parts.text_cf, encoder), ease=served_ease(parts, rm.item_ids),
        serving_pairs=read_training_pairs(parts.two_tower / MODEL_FOLDER, split),
        candidates=warehouse.query("select user_id, rank, item_id, route from recall.latest"),
        candidates_run_id=run_id, candidates_model_version=model_version,
        route_settings=run_route_settings(warehouse, run_id),
        profiles=warehouse.query("select user_id, embedding from features.user_profiles"),
        quarantined=quarantine_counts(warehouse),
        **dict(zip(("interest_owners", "interests"), interest_vectors(warehouse))))


def served_ease(parts: ServingParts, item_ids: np.ndarray):
    """The EASE model of ``parts`` when it covers the catalogue (None: none stored, and the
    evaluation fits the route's model itself)."""
    stored = load_ease(parts.ease)
    if stored is None:
        return None
    why = stored.matches(item_ids, *stored.fit_settings)
    if why:
        raise RuntimeError(f"{parts.ease}: {why}; materialize recall_candidates to publish lists and models together")
    return stored.model


def run_route_settings(warehouse: Warehouse, run_id: str) -> RouteSettings:
    """The route settings recall run ``run_id`` computed its lists with (``incremental.route_settings_of``)."""
    with warehouse.connect() as con:
        return incremental.route_settings_of(con, run_id)


def quarantine_counts(warehouse: Warehouse) -> pl.DataFrame | None:
    """Quarantined interaction rows by reason (None before the first cleaning)."""
    if not warehouse.has_table("quarantine.interactions"):
        return None
    return warehouse.query("select reason, count(*) as rows from quarantine.interactions group by reason")


def recall_inputs(warehouse: Warehouse, parts: ServingParts, users: np.ndarray | None = None) -> RecallInputs:
    """What ``recall_candidates`` reads: the catalogue, both indexes of ``parts`` (each checked
    against what it serves), the rating matrix, the profiles and the serving model's user
    vectors; of the given ``users`` only (None: every user), with the item counts of the whole
    matrix."""
    ids, vectors, encoder = item_vectors(warehouse)
    lm_index, lm_manifest = read_index(parts.lm_index, encoder, ids, vectors)
    rm = rating_matrix(warehouse)
    counts = rm.item_counts()
    model, model_index, manifest = two_tower_index(parts.two_tower, ids, vectors, encoder)
    owners, interests = interest_vectors(warehouse)
    profiles = warehouse.query("select user_id, embedding from features.user_profiles order by user_id")
    train = training_rows(warehouse)
    if users is not None:
        rm, keep = rm.restricted_to(users), np.isin(owners, users)
        owners, interests = owners[keep], interests[keep]
        profiles, train = (frame.filter(pl.col("user_id").is_in(rm.user_ids)) for frame in (profiles, train))
    return RecallInputs(
        item_ids=ids, item_vectors=vectors, encoder=encoder, lm_index=lm_index,
        lm_index_type=lm_manifest.index_type, rm=rm, profiles=profiles,
        interest_owners=owners, interests=interests, model_key=manifest.model,
        model_route=two_tower_route(model, model_index, train, rm), item_counts=counts,
        text_cf=text_cf.load(parts.text_cf, encoder), two_tower_trust=two_tower_trust(parts.two_tower))


def two_tower_trust(folder: Path) -> float:
    """The trust factor saved with the published model in ``folder``."""
    from recall_pipeline.core.training import two_tower
    from recall_pipeline.core.training.route_trust import saved_trust

    return saved_trust(two_tower.read_config(folder / MODEL_FOLDER))


def text_cf_fit_run(parts: ServingParts) -> str:
    """The run that fitted the TextCF model of ``parts`` ("none" before the first), for a recall run's basis."""
    model = text_cf.load(parts.text_cf, text_cf.ANY_ENCODER)
    return model.fit_run if model else "none"


def serving_model_version(warehouse: Warehouse, parts: ServingParts) -> str:
    """The version key recall's rows will carry (``RecallInputs.model_version``), read from the
    two-tower index's manifest of ``parts`` and the embeddings' model without loading either."""
    encoders = warehouse.query("select distinct model from features.item_embeddings")["model"].to_list()
    return f"{read_manifest(parts.two_tower).model}+{'|'.join(sorted(encoders))}"


def training_inputs(warehouse: Warehouse, home: PipelineHome):
    """What ``recall_model`` trains on (a ``TrainingInputs``; its module imports torch, so only
    here); the embeddings must cover the rating matrix's items."""
    from recall_pipeline.core.training.recall_model import TrainingInputs

    rm = rating_matrix(warehouse)
    ids, vectors, encoder = item_vectors(warehouse)
    require_same_ids(rm.item_ids, ids, "the item embeddings against the rating matrix's items")
    # the training part only: training, early stopping and the champion rule never see a test row
    train = warehouse.query("select user_id, item_id, rating, timestamp, part, val_part, is_relevant "
                            "from features.interactions_split where part = 'train'")
    return TrainingInputs(train, rm, ids, vectors, encoder)



@dataclass(frozen=True)
class SelectionInputs:
    """What ``route_settings`` chooses from: the split's training part with its validation cut
    (never a test row), the catalogue, the stored TextCF model's setting, the serving two-tower
    version's validation lists and trust, and the checksum of the current validation cut."""

    train: pl.DataFrame
    catalogue: Catalogue
    text_cf_setting: tuple[float, float, float, str] | None
    model_lists: ModelLists | None
    cut: str
    trust: float


def selection_inputs(warehouse: Warehouse, home: PipelineHome) -> SelectionInputs:
    """:class:`SelectionInputs` from the warehouse, the LM index and the published serving version."""
    from recall_pipeline.core.training import model_registry
    from recall_pipeline.core.training.recall_model import data_snapshot

    train = warehouse.query("select user_id, item_id, rating, timestamp, part, val_part, is_relevant "
                            "from features.interactions_split where part = 'train'")
    ids, vectors, encoder = item_vectors(warehouse)
    lm_index, _ = read_index(home.layout.item_index, encoder, ids, vectors)
    items = item_texts(warehouse)
    serving = serving_folder(home)
    stored = text_cf.load(home.layout.text_cf_model, encoder)
    return SelectionInputs(
        train=train, catalogue=Catalogue(ids, vectors, encoder, lm_index, items),
        text_cf_setting=(stored.lam, stored.alpha, stored.blend, stored.cold_scorer) if stored else None,
        model_lists=load_model_lists(serving / MODEL_FOLDER), cut=data_snapshot(train)[model_registry.VALIDATION_CUT],
        trust=two_tower_trust(serving))
