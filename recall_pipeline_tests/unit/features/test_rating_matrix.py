"""The training rating matrix and its stored form."""

from datetime import datetime

import numpy as np
import polars as pl
import pytest

import duckdb

from recall_pipeline.core.features.rating_matrix import (
    RatingMatrix, build_rating_matrix, matrix_tables, read_rating_matrix,
)


def split_frame(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")


def test_matrix_holds_training_ratings_over_the_whole_catalogue(tmp_path):
    split = split_frame([
        ("b", "x", 4.0, datetime(2020, 1, 1), "train"),
        ("b", "x", 2.0, datetime(2020, 1, 3), "train"),   # re-rated later: the latest counts
        ("a", "y", 5.0, datetime(2020, 1, 2), "train"),
        ("a", "z", 3.0, datetime(2020, 1, 4), "warm_test"),
        ("c", "z", 1.0, datetime(2020, 1, 4), "cold_test"),
    ])
    rm = build_rating_matrix(split, np.array(["z", "y", "x", "w"], dtype=object))
    assert rm.user_ids.tolist() == ["a", "b", "c"]
    assert rm.item_ids.tolist() == ["w", "x", "y", "z"]
    assert rm.matrix.toarray().tolist() == [[0, 0, 5, 0], [0, 2, 0, 0], [0, 0, 0, 0]]
    loaded = stored_and_read(rm, tmp_path)
    assert loaded.user_ids.tolist() == ["a", "b", "c"] and loaded.item_ids.tolist() == ["w", "x", "y", "z"]
    assert (loaded.matrix != rm.matrix).nnz == 0


def stored_and_read(rm, tmp_path):
    """The matrix written as warehouse tables and read back from a DuckDB file."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("create schema features")
        for table, frame in matrix_tables(rm).items():
            con.register("incoming", frame.to_arrow())
            con.execute(f"create or replace table {table} as select * from incoming")
            con.unregister("incoming")
        return read_rating_matrix(con)


def test_stored_matrix_is_the_same_csr_explicit_zeros_included(tmp_path):
    split = split_frame([(1, 7, 0.0, datetime(2020, 1, 1), "train"), (1, 9, 4.5, datetime(2020, 1, 2), "train"),
                         (2, 8, 3.0, datetime(2020, 1, 1), "train")])
    rm = build_rating_matrix(split, np.array([9, 8, 7]))
    assert rm.matrix.nnz == 3  # the 0 rating is a stored entry: the user saw the item
    loaded = stored_and_read(rm, tmp_path)
    for name in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(loaded.matrix, name), getattr(rm.matrix, name))
        assert getattr(loaded.matrix, name).dtype == getattr(rm.matrix, name).dtype
    assert loaded.user_ids.tolist() == [1, 2] and loaded.item_ids.tolist() == [7, 8, 9]


def test_implicit_feedback_counts_one(tmp_path):
    split = split_frame([(1, 7, None, datetime(2020, 1, 1), "train")])
    rm = build_rating_matrix(split, np.array([7, 8]))
    assert rm.matrix.toarray().tolist() == [[1.0, 0.0]]
    assert rm.item_index().rows() == [(7, 0), (8, 1)]


def test_recency_places_count_from_the_latest_and_survive_storage(tmp_path):
    split = split_frame([
        (1, 7, 4.0, datetime(2020, 1, 3), "train"),
        (1, 8, 4.0, datetime(2020, 1, 1), "train"),
        (1, 9, 4.0, datetime(2020, 1, 2), "train"),
        (1, 8, 2.0, datetime(2020, 1, 5), "train"),    # re-rated: its place is that of the latest event
        (1, 6, 4.0, datetime(2020, 1, 9), "warm_test"),  # not training: no place
        (2, 6, 0.0, datetime(2020, 1, 1), "train"),    # same time: the larger item id counts as later
        (2, 9, 3.0, datetime(2020, 1, 1), "train"),
    ])
    rm = build_rating_matrix(split, np.array([6, 7, 8, 9]))
    assert rm.recency.toarray().tolist() == [[0, 2, 1, 3], [2, 0, 0, 1]]
    loaded = stored_and_read(rm, tmp_path)
    assert np.array_equal(loaded.recency.toarray(), rm.recency.toarray())
    assert rm.restricted_to(np.array([2])).recency.toarray().tolist() == [[2, 0, 0, 1]]
    weighted = rm.recency_weighted(tau=1.0, floor=0.5).toarray()
    assert weighted[0].tolist() == pytest.approx([0, 0.5 + 0.5 * np.exp(-1), 1.0, 0.5 + 0.5 * np.exp(-2)])
    assert weighted[1].tolist() == pytest.approx([0.5 + 0.5 * np.exp(-1), 0, 0, 1.0])  # a 0 rating still counts
    assert rm.recency_weighted(tau=0.0, floor=0.5).toarray().tolist() == [[0, 1, 1, 1], [1, 0, 0, 1]]
    # a block of users weighs its own rows, in the order given
    assert rm.recency_weighted(tau=1.0, floor=0.5, rows=np.array([1, 0])).toarray().tolist() == weighted[::-1].tolist()


def test_a_matrix_stored_without_recency_reads_as_unweighted(tmp_path):
    rm = build_rating_matrix(split_frame([(1, 7, 4.0, datetime(2020, 1, 1), "train"),
                                          (1, 8, 4.0, datetime(2020, 1, 2), "train")]), np.array([7, 8]))
    old = RatingMatrix(rm.matrix, rm.user_ids, rm.item_ids)  # as a warehouse written before the column
    loaded = stored_and_read(old, tmp_path)
    assert loaded.recency is None
    assert loaded.recency_weighted(tau=5.0, floor=0.2).toarray().tolist() == [[1.0, 1.0]]
