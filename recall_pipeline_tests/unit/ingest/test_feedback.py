"""Feedback files: formats, event types, and the inbox triage the sensor relies on."""

import json

import pytest

from recall_pipeline.core.ingest.feedback import content_hash, ingest_files, read_feedback, triage
from recall_pipeline.core.ingest.sources import SourceError


def test_csv_with_event_types_and_ratings(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,event_type,rating,timestamp\n"
                    "1,10,click,,2026-11-01T10:00:00\n1,11,,2.5,2026-11-01T11:00:00\n1,12,teleport,,1762000000\n")
    raw = read_feedback(path, batch_id="feedback-x")
    assert raw.select("user_id", "item_id", "rating", "event_type").rows() == [
        ("1", "10", "4.0", "click"), ("1", "11", "2.5", None), ("1", "12", None, "teleport")]
    assert raw["batch_id"].unique().to_list() == ["feedback-x"]
    assert raw["source_row"].to_list() == [1, 2, 3]


def test_json_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"user_id": 7, "item_id": 1, "rating": 5, "timestamp": "2026-11-01"},
        {"user_id": 7, "item_id": 2, "rating": 4.5, "timestamp": "2026-11-02"}]) + "\n")
    assert read_feedback(path, "b").select("user_id", "rating").rows() == [("7", "5"), ("7", "4.5")]


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id,timestamp\n1,2,3\n", "needs a rating or an event_type column"),
    ("user,item_id,rating,timestamp\n1,2,3,4\n", "column 'user_id' .* is missing"),
    ("user_id,item_id,rating,timestamp\n", "no data rows"),
])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        read_feedback(path, "b")


def test_triage_requests_new_files_once_and_moves_the_rest(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = "user_id,item_id,rating,timestamp\n1,10,5,2026-11-01\n"
    (inbox / "a.csv").write_text(good)
    (inbox / "b.csv").write_text("not,a,feedback\nfile,at,all\n")
    (inbox / "c.csv").write_text(good)          # the same content as a.csv
    (inbox / "notes.txt").write_text("ignored")  # not a feedback file type
    new, duplicates, rejected = triage(inbox, requested={})
    assert [(p.name, d) for p, d in new] == [("a.csv", content_hash(inbox / "a.csv"))]
    assert (duplicates, rejected) == (1, 1)
    assert (inbox / "rejected" / "b.csv").exists()
    assert "needs a rating or an event_type" in (inbox / "rejected" / "b.csv.reason.txt").read_text()
    assert "same content as a.csv" in (inbox / "duplicates" / "c.csv.reason.txt").read_text()
    # next tick: a.csv is waiting for its run, so nothing new is requested
    assert triage(inbox, {new[0][1]: "a.csv"}) == ([], 0, 0)
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["a.csv", "notes.txt"]


def test_ingest_files_stores_each_content_once_and_sorts_the_rest(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = "user_id,item_id,rating,timestamp\n1,2,4.5,2026-11-01\n1,3,5,2026-11-02\n"
    (inbox / "a.csv").write_text(good)
    (inbox / "copy_of_a.csv").write_text(good)
    (inbox / "bad.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    stored, warnings = [], []
    files = [inbox / "a.csv", inbox / "copy_of_a.csv", inbox / "bad.csv", inbox / "gone.csv"]
    counts = ingest_files(files, inbox, set(), lambda rows, digest, path: stored.append((path.name, rows.height)),
                          warnings.append)
    assert counts == {"ingested": 1, "rows": 2, "already_ingested": 1, "rejected": 1, "missing": 1}
    assert stored == [("a.csv", 2)]
    assert (inbox / "archive" / "a.csv").exists() and (inbox / "duplicates" / "copy_of_a.csv").exists()
    assert (inbox / "rejected" / "bad.csv").exists() and "rating or an event_type" in warnings[0]
    assert not list(inbox.glob("*.csv"))
