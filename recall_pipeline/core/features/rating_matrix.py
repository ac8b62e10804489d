"""The user x item rating matrix of the training split (scipy.sparse CSR) and its id maps."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.ids import positions
from recall_pipeline.core.scoring import item_counts


@dataclass(frozen=True)
class RatingMatrix:
    """CSR matrix of training ratings with the ids of its rows (users) and columns (items).

    Values are ratings (1.0 for implicit feedback); a (user, item) pair seen more than once in
    training keeps its latest rating. Rows cover every user with any clean interaction and
    columns the whole catalogue, so cold items and users with no training history have empty
    columns and rows.

    ``recency`` has the matrix's entries with, for each, its place in the user's training
    history counted from the end (1: the latest interaction, 2: the one before, ...; ties in
    time ordered by item id): what the EASE route weights recent interactions by (the warm test
    is each user's latest interactions, see :meth:`recency_weighted`). None for a matrix stored
    before it existed: every entry then weighs the same.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    recency: sp.csr_matrix | None = None

    def user_index(self) -> pl.DataFrame:
        return pl.DataFrame({"user_id": self.user_ids, "user_index": np.arange(len(self.user_ids))})

    def item_index(self) -> pl.DataFrame:
        return pl.DataFrame({"item_id": self.item_ids, "item_index": np.arange(len(self.item_ids))})

    def item_counts(self) -> np.ndarray:
        """Training interactions per item (stored entries: a 0 rating counts)."""
        return item_counts(self.matrix)

    def restricted_to(self, user_ids: np.ndarray) -> "RatingMatrix":
        """The rows of these users (sorted, all present), over the same items."""
        user_ids = np.sort(np.asarray(user_ids))
        rows = positions(self.user_ids, user_ids, "users to recompute among the rating matrix's users")
        return RatingMatrix(self.matrix[rows], user_ids, self.item_ids,
                            None if self.recency is None else self.recency[rows])

    def recency_weighted(self, tau: float, floor: float, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """The binary history with each entry weighted ``floor + (1 - floor) * exp(-(place - 1) / tau)``
        by its :attr:`recency` place: the latest interaction weighs 1, older ones decay towards
        ``floor``. ``tau`` 0 (or no recency stored): every entry weighs 1. ``rows``: only those
        users' rows, in that order (a block of users weighs its own rows, not the matrix)."""
        matrix = self.matrix if rows is None else self.matrix[np.asarray(rows)]
        weights = sp.csr_matrix((np.ones(matrix.nnz), matrix.indices, matrix.indptr), shape=matrix.shape)
        if tau > 0 and self.recency is not None:
            recency = self.recency if rows is None else self.recency[np.asarray(rows)]
            weights.data = recency_weight(aligned_places(matrix, recency), tau, floor)
        return weights


def recency_weight(places: np.ndarray, tau: float, floor: float) -> np.ndarray:
    """What an interaction at each place (1: the user's latest, counted over distinct items)
    weighs: ``floor + (1 - floor) * exp(-(place - 1) / tau)``; ``tau`` 0: every one weighs 1. The
    one formula behind the nightly EASE route and ad-hoc recall."""
    places = np.asarray(places, dtype=np.float64)
    if tau <= 0:
        return np.ones(len(places))
    return floor + (1.0 - floor) * np.exp(-(places - 1.0) / tau)


def aligned_recency(rm: RatingMatrix) -> np.ndarray:
    """``rm.recency``'s places in the order of ``rm.matrix.data`` (both sorted CSR over the same
    entries; anything else is a bug upstream and raises)."""
    return aligned_places(rm.matrix, rm.recency)


def aligned_places(matrix: sp.csr_matrix, recency: sp.csr_matrix) -> np.ndarray:
    """``recency``'s places in the order of ``matrix.data`` (see :func:`aligned_recency`)."""
    if recency.shape != matrix.shape or not (np.array_equal(recency.indptr, matrix.indptr)
                                             and np.array_equal(recency.indices, matrix.indices)):
        raise ValueError("the recency places do not cover the rating matrix's entries")
    return recency.data


def build_rating_matrix(split: pl.DataFrame, item_ids: np.ndarray, user_ids: np.ndarray | None = None) -> RatingMatrix:
    """The training ratings of ``split`` over all its users (or the given sorted ``user_ids``,
    which must hold them: another matrix's axis) and the catalogue ``item_ids``."""
    user_ids = np.sort(split["user_id"].unique().to_numpy()) if user_ids is None else np.asarray(user_ids)
    item_ids = np.sort(np.asarray(item_ids))
    train = (
        split.filter(pl.col("part") == "train")
        .sort("timestamp")
        .unique(["user_id", "item_id"], keep="last", maintain_order=True)
    )
    rows = positions(user_ids, train["user_id"].to_numpy(), "users")
    cols = positions(item_ids, train["item_id"].to_numpy(), "training items in the catalogue")
    values = train["rating"].fill_null(1.0).to_numpy().astype(np.float32)
    shape = (len(user_ids), len(item_ids))
    matrix = sp.csr_matrix((values, (rows, cols)), shape=shape)
    matrix.sort_indices()
    return RatingMatrix(matrix, user_ids, item_ids, recency_places(train, rows, cols, shape))


def recency_places(train: pl.DataFrame, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Per (user, item) entry of ``train`` (one row per pair), its place in the user's history
    from the end: 1 for the latest (ties in time: the larger item id first)."""
    places = (train.with_row_index("row")
              .sort(["user_id", "timestamp", "item_id"])
              .with_columns(place=pl.int_range(pl.len(), 0, -1).over("user_id"))
              .sort("row")["place"].to_numpy().astype(np.float32))
    recency = sp.csr_matrix((places, (rows, cols)), shape=shape)
    recency.sort_indices()
    return recency


MATRIX_TABLE = "features.rating_matrix"


def matrix_tables(rating_matrix: RatingMatrix) -> dict[str, pl.DataFrame]:
    """The matrix as warehouse tables: its id maps and its stored entries (explicit zero ratings
    included), written with the split in one transaction so that no reader ever sees a matrix
    from another split than the one beside it."""
    return {"features.user_index": rating_matrix.user_index(), "features.item_index": rating_matrix.item_index(),
            MATRIX_TABLE: matrix_entries(rating_matrix)}


def matrix_entries(rating_matrix: RatingMatrix) -> pl.DataFrame:
    """The stored entries (user_index, item_index, rating and, when known, recency): the form
    the warehouse and the recall shards keep the matrix in (:func:`matrix_from_entries`)."""
    coo = rating_matrix.matrix.tocoo()
    entries = pl.DataFrame({"user_index": coo.row.astype(np.int32), "item_index": coo.col.astype(np.int32),
                            "rating": coo.data.astype(np.float32)})
    if rating_matrix.recency is not None:  # same entries in the same (row, sorted column) order
        entries = entries.with_columns(recency=pl.Series(aligned_recency(rating_matrix).astype(np.int32)))
    return entries


def read_rating_matrix(con: duckdb.DuckDBPyConnection) -> RatingMatrix:
    """The matrix from the warehouse tables of :func:`matrix_tables`, read in one transaction."""
    con.execute("begin transaction")
    try:
        users = con.sql("select user_id from features.user_index order by user_index").pl()["user_id"].to_numpy()
        items = con.sql("select item_id from features.item_index order by item_index").pl()["item_id"].to_numpy()
        entries = con.sql(f"select * from {MATRIX_TABLE}").pl()
    finally:
        con.execute("rollback")
    return matrix_from_entries(entries, users, items)


def matrix_from_entries(entries: pl.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> RatingMatrix:
    """The :class:`RatingMatrix` of :func:`matrix_entries` (a table stored before ``recency``
    existed gives a matrix without it)."""
    index = (entries["user_index"].to_numpy(), entries["item_index"].to_numpy())
    shape = (len(user_ids), len(item_ids))
    matrix = sp.csr_matrix((entries["rating"].to_numpy(), index), shape=shape)
    matrix.sort_indices()
    recency = None
    if "recency" in entries.columns:
        recency = sp.csr_matrix((entries["recency"].to_numpy().astype(np.float32), index), shape=shape)
        recency.sort_indices()
    return RatingMatrix(matrix, user_ids, item_ids, recency)
