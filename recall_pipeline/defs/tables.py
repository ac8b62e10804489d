"""Reads of warehouse tables that several assets share, returned as numpy-ready objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recall_pipeline.core.serving.index import read_index, read_manifest
from recall_pipeline.core.features.item_embeddings import as_matrix
from recall_pipeline.core.features.rating_matrix import RatingMatrix, load_rating_matrix
from recall_pipeline.resources import PipelineHome, Warehouse


def item_vectors(warehouse: Warehouse) -> tuple[np.ndarray, np.ndarray, str]:
    """Item ids (sorted), their embeddings and the model key that made them."""
    table = warehouse.query("select item_id, model, embedding from features.item_embeddings")
    models = table["model"].unique().to_list()
    if len(models) != 1:
        raise RuntimeError(f"features.item_embeddings mixes models {models}; re-materialize it")
    ids, vectors = as_matrix(table)
    return ids, vectors, models[0]


def rating_matrix(home: PipelineHome) -> RatingMatrix:
    return load_rating_matrix(home.layout.features / "rating_matrix.npz")


def interest_vectors(warehouse: Warehouse) -> tuple[np.ndarray, np.ndarray]:
    """(owner user id, vector) of every interest: the k-means interests and the encoded
    interest text of each profile."""
    interests = warehouse.query("select user_id, embedding from features.user_interests")
    texts = warehouse.query("select user_id, interest_embedding as embedding from features.user_profiles "
                            "where interest_embedding is not null")
    both = pl.concat([interests, texts.cast({"embedding": interests.schema["embedding"]})])
    if both.is_empty():
        return both["user_id"].to_numpy(), np.zeros((0, 1), dtype=np.float32)
    return both["user_id"].to_numpy(), np.ascontiguousarray(both["embedding"].to_numpy(), dtype=np.float32)


def two_tower_model(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str):
    """The two-tower model stored in ``folder/model`` over the current catalogue (its item ids,
    LM embeddings and encoder key, as ``item_vectors`` returns them) and its serving item
    vectors; torch is imported only here."""
    from recall_pipeline.core.training import two_tower

    model = two_tower.load_for_catalogue(folder / "model", item_ids, lm_vectors, encoder)
    return model, two_tower.item_vectors(model)


def two_tower_index(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str):
    """(model, FAISS index, manifest) of the stored two-tower index; refuses an index that was
    not built from this model's item vectors."""
    model, vectors = two_tower_model(folder, item_ids, lm_vectors, encoder)
    index, manifest = read_index(folder, read_manifest(folder).model, item_ids, vectors, "two_tower_index")
    return model, index, manifest
