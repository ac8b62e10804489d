"""Checks on a run's candidates and publication, on a small real DuckDB file."""

import duckdb
import pytest

from recall_pipeline.core.recall.published_tables import publish_run, training_items_recalled, users_short_of_candidates


@pytest.fixture
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema features; create schema recall")
    con.execute("create table features.user_index as select * from (values (1, 0), (2, 1)) t(user_id, user_index)")
    con.execute("create table features.item_index as select range as item_id, range as item_index from range(4)")
    # user 1 saw item 0 twice (two training rows, one distinct item); user 2 saw items 0 and 1
    con.execute("""create table features.interactions_split as select * from (values
        (1, 0, 'train'), (1, 0, 'train'), (2, 0, 'train'), (2, 1, 'train'), (2, 3, 'warm_test'))
        t(user_id, item_id, part)""")
    con.execute("create table recall.candidates (run_id varchar, user_id int, rank int, item_id int)")
    yield con
    con.close()


def add(con, run_id, rows):
    con.executemany("insert into recall.candidates values (?, ?, ?, ?)", [(run_id, *r) for r in rows])


def test_expected_list_length_counts_distinct_training_items(con):
    # catalogue 4 - 1 distinct seen = 3 for user 1 (not 4 - 2 rows); 2 for user 2
    add(con, "good", [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 2), (2, 2, 3)])
    assert users_short_of_candidates(con, "good", k=100) == 0
    assert users_short_of_candidates(con, "good", k=2) == 1   # user 1 has 3, should have 2
    add(con, "short", [(1, 1, 1)])
    assert users_short_of_candidates(con, "short", k=100) == 2  # user 1 short, user 2 missing


def test_training_items_recalled(con):
    add(con, "leaky", [(1, 1, 0), (2, 1, 3), (2, 2, 1)])
    assert training_items_recalled(con, "leaky") == 2


def test_latest_shows_the_newest_published_run_only(con):
    add(con, "first", [(1, 1, 1)])
    publish_run(con, "first")
    add(con, "unpublished", [(1, 1, 2)])
    assert con.execute("select distinct run_id from recall.latest").fetchall() == [("first",)]
    add(con, "second", [(1, 1, 3)])
    publish_run(con, "second")
    assert con.execute("select distinct run_id from recall.latest").fetchall() == [("second",)]
