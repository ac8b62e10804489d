"""Reads of warehouse tables that several assets share, returned as numpy-ready objects."""

from __future__ import annotations

import numpy as np

from recall_pipeline.core.item_embeddings import as_matrix
from recall_pipeline.core.matrix import RatingMatrix, load_rating_matrix
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
