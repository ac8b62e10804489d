"""The user x item rating matrix of the training split (scipy.sparse CSR) and its id maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.ids import positions, storable_ids


@dataclass(frozen=True)
class RatingMatrix:
    """CSR matrix of training ratings with the ids of its rows (users) and columns (items).

    Values are ratings (1.0 for implicit feedback); a (user, item) pair seen more than once in
    training keeps its latest rating. Rows cover every user with any clean interaction and
    columns the whole catalogue, so cold items and users with no training history have empty
    columns and rows.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    def user_index(self) -> pl.DataFrame:
        return pl.DataFrame({"user_id": self.user_ids, "user_index": np.arange(len(self.user_ids))})

    def item_index(self) -> pl.DataFrame:
        return pl.DataFrame({"item_id": self.item_ids, "item_index": np.arange(len(self.item_ids))})


def build_rating_matrix(split: pl.DataFrame, item_ids: np.ndarray) -> RatingMatrix:
    """The training ratings of ``split`` over all its users and the catalogue ``item_ids``."""
    user_ids = np.sort(split["user_id"].unique().to_numpy())
    item_ids = np.sort(np.asarray(item_ids))
    train = (
        split.filter(pl.col("part") == "train")
        .sort("timestamp")
        .unique(["user_id", "item_id"], keep="last", maintain_order=True)
    )
    rows = positions(user_ids, train["user_id"].to_numpy(), "users")
    cols = positions(item_ids, train["item_id"].to_numpy(), "training items in the catalogue")
    values = train["rating"].fill_null(1.0).to_numpy().astype(np.float32)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(len(user_ids), len(item_ids)))
    matrix.sort_indices()
    return RatingMatrix(matrix, user_ids, item_ids)


def save_rating_matrix(rating_matrix: RatingMatrix, path: Path) -> None:
    """Write the matrix with its id maps to one .npz file (atomically)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, data=rating_matrix.matrix.data, indices=rating_matrix.matrix.indices,
        indptr=rating_matrix.matrix.indptr, shape=np.array(rating_matrix.matrix.shape),
        user_ids=storable_ids(rating_matrix.user_ids), item_ids=storable_ids(rating_matrix.item_ids),
    )
    tmp.replace(path)


def load_rating_matrix(path: Path) -> RatingMatrix:
    with np.load(path, allow_pickle=False) as stored:
        matrix = sp.csr_matrix((stored["data"], stored["indices"], stored["indptr"]),
                               shape=tuple(stored["shape"]))
        return RatingMatrix(matrix, stored["user_ids"], stored["item_ids"])
