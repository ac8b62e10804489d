"""Each quarantine reason, duplicate resolution, reconciliation and whole-column errors."""

from datetime import datetime, timezone

import polars as pl
import pytest

from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions, nothing_clean_message
from recall_pipeline.core.ingest.sources import SourceError
from recall_pipeline_tests.conftest import raw_frame

NOW = datetime(2026, 1, 1)
KNOWN = pl.Series([10, 11, 12])


def row(user="1", item="10", rating="4", ts="1000"):
    return {"user_id": user, "item_id": item, "rating": rating, "timestamp": ts}


@pytest.mark.parametrize("bad, reason", [
    (row(user=None), "null_user_id"),
    (row(user="  "), "null_user_id"),
    (row(user="u1"), "unparseable_user_id"),
    (row(item=None), "null_item_id"),
    (row(item="1.5"), "unparseable_item_id"),
    (row(ts=None), "null_timestamp"),
    (row(ts="yesterday"), "unparseable_timestamp"),
    (row(ts="2030-01-01T00:00:00"), "future_timestamp"),
    (row(ts=str(int(datetime(2027, 1, 1).timestamp()))), "future_timestamp"),
    (row(rating=""), "null_rating"),
    (row(rating="five"), "unparseable_rating"),
    (row(rating="NaN"), "unparseable_rating"),
    (row(rating="5.5"), "rating_out_of_range"),
    (row(rating="0"), "rating_out_of_range"),
    (row(item="99"), "unknown_item"),
])
def test_each_bad_row_is_quarantined_with_its_reason(bad, reason):
    raw = raw_frame([row(), bad, row(user="2")])
    clean, quarantine = clean_interactions(raw, KNOWN, CleaningRules(), NOW)
    assert quarantine.select("source_row", "reason").rows() == [(2, reason)]
    assert quarantine["detail"][0]  # a human-readable explanation
    assert clean["user_id"].to_list() == [1, 2]
    assert clean.height + quarantine.height == raw.height


def test_first_broken_rule_wins():
    raw = raw_frame([row(), row(user="x", rating="9", item="99")])
    _, quarantine = clean_interactions(raw, KNOWN, CleaningRules(), NOW)
    assert quarantine["reason"].to_list() == ["unparseable_user_id"]


def test_duplicates_keep_the_last_loaded_row():
    raw = raw_frame([row(rating="2"), row(item="11"), row(rating="5")])
    clean, quarantine = clean_interactions(raw, KNOWN, CleaningRules(), NOW)
    assert quarantine.select("source_row", "reason").rows() == [(1, "duplicate")]
    assert clean.filter(pl.col("item_id") == 10)["rating"].to_list() == [5.0]


def test_same_pair_at_another_time_is_not_a_duplicate():
    raw = raw_frame([row(ts="1000"), row(ts="2000")])
    clean, quarantine = clean_interactions(raw, KNOWN, CleaningRules(), NOW)
    assert clean.height == 2 and quarantine.height == 0


def test_values_are_typed():
    raw = raw_frame([row(ts="2020-05-06 07:08:09", rating=" 3.5 "), row(user="2", ts="1260759144")])
    clean, _ = clean_interactions(raw, KNOWN, CleaningRules(), NOW)
    assert clean.schema["user_id"] == pl.Int64 and clean.schema["rating"] == pl.Float64
    assert clean["timestamp"].to_list() == [datetime(2020, 5, 6, 7, 8, 9), datetime.fromtimestamp(1260759144, timezone.utc).replace(tzinfo=None)]
    assert clean["rating"].to_list()[0] == 3.5


@pytest.mark.parametrize("text, expected", [
    ("2020-01-09T10:00:00Z", datetime(2020, 1, 9, 10)),
    ("2020-01-09T10:00:00+02:00", datetime(2020, 1, 9, 8)),
    ("2020-01-09 10:00:00.000000+00:00", datetime(2020, 1, 9, 10)),
    ("2020-01-09T10:00:00.5-0130", datetime(2020, 1, 9, 11, 30, 0, 500000)),
    ("2020-01-09", datetime(2020, 1, 9)),
    ("1578564000", datetime(2020, 1, 9, 10)),
    ("1578564000.5", datetime(2020, 1, 9, 10, 0, 0, 500000)),
])
def test_timestamp_forms(text, expected):
    clean, quarantine = clean_interactions(raw_frame([row(ts=text)]), KNOWN, CleaningRules(), NOW)
    assert quarantine.height == 0 and clean["timestamp"].to_list() == [expected]


def test_epoch_milliseconds_need_the_unit():
    raw = raw_frame([row(ts="1578564000000")])
    clean, _ = clean_interactions(raw, KNOWN, CleaningRules(epoch_unit="ms"), NOW)
    assert clean["timestamp"].to_list() == [datetime(2020, 1, 9, 10)]
    with pytest.raises(SourceError, match="no value that parses as a timestamp .*epoch_unit"):
        clean_interactions(raw, KNOWN, CleaningRules(), NOW)  # read as seconds: year 51970


def test_a_load_with_nothing_clean_is_explained():
    _, quarantine = clean_interactions(raw_frame([row(ts="2099-01-01")]), KNOWN, CleaningRules(), NOW)
    message = nothing_clean_message(quarantine)
    assert "all 1 rows were quarantined (future_timestamp: 1)" in message and "epoch_unit" in message
    assert "ratings.csv row 1" in message


def test_implicit_feedback_has_null_ratings():
    raw = raw_frame([row(rating=None), row(user="2", rating=None)])
    clean, quarantine = clean_interactions(raw, KNOWN, CleaningRules(has_rating=False), NOW)
    assert quarantine.height == 0 and clean["rating"].null_count() == 2


def test_text_ids():
    raw = raw_frame([row(user="alice", item="m1")])
    clean, _ = clean_interactions(raw, pl.Series(["m1"]), CleaningRules(id_type="str"), NOW)
    assert clean.select("user_id", "item_id").rows() == [("alice", "m1")]


def test_a_column_where_nothing_parses_is_a_mapping_error():
    raw = raw_frame([row(ts="Heat"), row(ts="Alien")], source_file="data/ratings.csv")
    with pytest.raises(SourceError, match=r"data/ratings\.csv: column timestamp has no value that "
                                          r"parses as a timestamp .*\(row 1: 'Heat'\)"):
        clean_interactions(raw, KNOWN, CleaningRules(), NOW)


def test_bundled_data_is_all_clean(bundled_raw, bundled_split):
    """Every raw rating is in the split once with the values of its text (epoch seconds read
    as UTC): cleaning dropped, duplicated or altered none (the row count alone is in
    test_split's check table)."""
    raw, _ = bundled_raw
    _, split = bundled_split
    typed = raw.select(pl.col("user_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64),
                       pl.col("rating").cast(pl.Float64),
                       pl.from_epoch(pl.col("timestamp").cast(pl.Int64), time_unit="s").alias("timestamp"))
    keys = ["user_id", "item_id", "timestamp", "rating"]
    assert split.select(keys).sort(keys).equals(typed.select(keys).sort(keys))
