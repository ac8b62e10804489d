"""Loading files: column mapping, and a clear error for every kind of unusable file."""

import re
from pathlib import Path

import polars as pl
import pytest

from recall_pipeline.core.ingest.sources import (
    InteractionColumns, ItemColumns, SourceError, load_interaction_file, load_item_file, read_table,
)

COLUMNS = InteractionColumns(user_id="uid", item_id="iid", rating="stars", timestamp="ts")


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_is_loaded_as_text_with_mapping_and_provenance(tmp_path):
    path = write_csv(tmp_path / "r.csv", "uid,iid,stars,ts,extra\n1,10,4.5,1000,x\n2,11,3,2000,y\n")
    raw = load_interaction_file(path, COLUMNS, batch_id="b7")
    assert raw.select("user_id", "item_id", "rating", "timestamp").rows() == [
        ("1", "10", "4.5", "1000"), ("2", "11", "3", "2000")]
    assert raw["source_row"].to_list() == [1, 2]
    assert raw["source_file"].unique().to_list() == [str(path)]
    assert raw["batch_id"].unique().to_list() == ["b7"]


def test_parquet_numbers_become_plain_text(tmp_path):
    path = tmp_path / "r.parquet"
    pl.DataFrame({"uid": [1, 2], "iid": [10, 11], "stars": [4.0, 3.5], "ts": [1000, 2000]}).write_parquet(path)
    raw = load_interaction_file(path, COLUMNS, batch_id="b")
    assert raw["rating"].to_list() == ["4", "3.5"]
    assert raw["user_id"].to_list() == ["1", "2"]


def test_items_without_optional_columns(tmp_path):
    path = write_csv(tmp_path / "items.csv", "id,name\n1,Alien\n")
    raw = load_item_file(path, ItemColumns(item_id="id", title="name", year=None, genres=None), "b")
    assert raw.row(0, named=True)["title"] == "Alien"
    assert raw.row(0, named=True)["genres"] is None


def test_missing_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "r.csv", "uid,iid,ts\n1,10,1000\n")
    with pytest.raises(SourceError, match=r"r\.csv: column 'stars' \(mapped to rating\) is missing"):
        load_interaction_file(path, COLUMNS, "b")


def test_nested_column_type_is_refused(tmp_path):
    path = tmp_path / "r.parquet"
    pl.DataFrame({"uid": [[1, 2]], "iid": [10], "stars": [4.0], "ts": [1000]}).write_parquet(path)
    with pytest.raises(SourceError, match=r"r\.parquet: column 'uid' \(mapped to user_id\) has type List"):
        load_interaction_file(path, COLUMNS, "b")


@pytest.mark.parametrize("content, problem", [
    ("", r"cannot be read as csv: .*empty.*"),  # not even a header (the rest is polars' own words)
    ("uid,iid,stars,ts\n", r"the file has no data rows"),  # a header alone
])
def test_empty_file(tmp_path, content, problem):
    """The message is the file's full path, then what is wrong with it."""
    path = write_csv(tmp_path / "r.csv", content)
    with pytest.raises(SourceError) as raised:
        read_table(path)
    assert re.fullmatch(re.escape(f"{path}: ") + problem, str(raised.value), re.IGNORECASE), str(raised.value)


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "r.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(SourceError, match=r"r\.parquet: cannot be read as parquet"):
        read_table(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    path = write_csv(tmp_path / "r.xlsx", "x")
    with pytest.raises(SourceError, match="unsupported file type '.xlsx'"):
        read_table(path)


def test_bundled_data_loads_whole(bundled_raw):
    interactions, items = bundled_raw
    assert interactions.height == 100_004
    assert items.height == 9_066
    first = interactions.row(0, named=True)
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == ("1", "31", "2.5", "1260759144")
    assert first["source_row"] == 1
    assert items.filter(pl.col("item_id") == "1")["year"].to_list() == ["1995"]


def test_time_zone_aware_parquet_timestamps_become_utc_text(tmp_path):
    from datetime import datetime, timedelta, timezone

    path = tmp_path / "r.parquet"
    berlin = timezone(timedelta(hours=1))
    pl.DataFrame({"uid": [1], "iid": [10], "stars": [4.0],
                  "ts": [datetime(2020, 1, 9, 11, tzinfo=berlin)]}).write_parquet(path)
    raw = load_interaction_file(path, COLUMNS, batch_id="b")
    assert raw["timestamp"].to_list() == ["2020-01-09 10:00:00.000000"]


def test_a_latin1_file_reads_with_the_encoding_setting_and_names_the_row_without_it(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes("movieId,title\n1,Heat\n2,Amélie\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"items.csv: row 2 is not valid utf-8 .* set `encoding:` in the source YAML"):
        read_table(path)
    frame = read_table(path, encoding="latin-1")
    assert frame["title"].to_list() == ["Heat", "Amélie"]
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        read_table(path, encoding="klingon")
