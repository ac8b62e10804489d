"""The user x item rating matrix of the training split (scipy.sparse CSR) and its id maps."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.ids import positions


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

    def item_counts(self) -> np.ndarray:
        """Training interactions per item (stored entries: a 0 rating counts)."""
        return np.diff(self.matrix.tocsc().indptr)

    def restricted_to(self, user_ids: np.ndarray) -> "RatingMatrix":
        """The rows of these users (sorted, all present), over the same items."""
        user_ids = np.sort(np.asarray(user_ids))
        rows = positions(self.user_ids, user_ids, "users to recompute among the rating matrix's users")
        return RatingMatrix(self.matrix[rows], user_ids, self.item_ids)


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


MATRIX_TABLE = "features.rating_matrix"


def matrix_tables(rating_matrix: RatingMatrix) -> dict[str, pl.DataFrame]:
    """The matrix as warehouse tables: its id maps and its stored entries (explicit zero ratings
    included), written with the split in one transaction so that no reader ever sees a matrix
    from another split than the one beside it."""
    coo = rating_matrix.matrix.tocoo()
    entries = pl.DataFrame({"user_index": coo.row.astype(np.int32), "item_index": coo.col.astype(np.int32),
                            "rating": coo.data.astype(np.float32)})
    return {"features.user_index": rating_matrix.user_index(), "features.item_index": rating_matrix.item_index(),
            MATRIX_TABLE: entries}


def read_rating_matrix(con: duckdb.DuckDBPyConnection) -> RatingMatrix:
    """The matrix from the warehouse tables of :func:`matrix_tables`, read in one transaction."""
    con.execute("begin transaction")
    try:
        users = con.sql("select user_id from features.user_index order by user_index").pl()["user_id"].to_numpy()
        items = con.sql("select item_id from features.item_index order by item_index").pl()["item_id"].to_numpy()
        entries = con.sql(f"select user_index, item_index, rating from {MATRIX_TABLE}").pl()
    finally:
        con.execute("rollback")
    matrix = sp.csr_matrix((entries["rating"].to_numpy(), (entries["user_index"].to_numpy(),
                                                           entries["item_index"].to_numpy())),
                           shape=(len(users), len(items)))
    matrix.sort_indices()
    return RatingMatrix(matrix, users, items)
