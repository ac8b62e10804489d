"""The feedback inbox: files of new events dropped into ``<home>/inbox``.

A feedback file is CSV, Parquet or JSON lines with columns ``user_id``, ``item_id``,
``timestamp`` and ``rating`` or ``event_type`` (or both). Event types become ratings through
:data:`EVENT_RATINGS` when a row has no rating; an unknown event type leaves the rating empty,
and cleaning quarantines the row. A file is identified by the hash of its content, so the same
file copied twice is ingested once. After ingestion a file moves to ``inbox/archive``; a file
that cannot be used moves to ``inbox/rejected`` with ``<name>.reason.txt`` beside it; a copy of
an already-requested file moves to ``inbox/duplicates`` with its reason.

A file is read only once it is complete. Write it under a name ending in ``.part`` or ``.tmp``
and rename it when done (a rename is atomic): such names are never read. For writers that cannot
rename, the sensor also waits until a file's size and modification time are the same on two of
its ticks (:func:`settled_files`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from recall_pipeline.core.checksums import file_sha256
from recall_pipeline.core.ingest.sources import SourceError, read_table, select_columns, with_provenance

SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")
EVENT_RATINGS = {"purchase": 5.0, "like": 5.0, "rate_high": 5.0, "add_to_list": 4.5, "click": 4.0,
                 "view": 3.0, "skip": 2.0, "dislike": 1.0}
ARCHIVE, REJECTED, DUPLICATES = "archive", "rejected", "duplicates"
FEEDBACK_KIND = "feedback"  # raw.interactions.source_kind of the rows from feedback files
INCOMPLETE_SUFFIXES = (".part", ".tmp")  # still being written: renamed when complete


def content_hash(path: Path) -> str:
    """A file's identity: the same content under any name is the same feedback."""
    return file_sha256(path)


def pending_files(inbox: Path) -> list[Path]:
    """Feedback files waiting in the inbox, oldest first (then by name)."""
    if not inbox.is_dir():
        return []
    files = [p for p in inbox.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIXES
             and p.suffix.lower() not in INCOMPLETE_SUFFIXES]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def settled_files(inbox: Path, seen: dict[str, list[int]]) -> tuple[list[Path], dict[str, list[int]]]:
    """Files whose size and modification time are what the previous look saw: writing stopped.

    ``seen`` maps a file name to its ``[size, mtime_ns]`` at the previous look (the sensor keeps
    it in its cursor). Returns the settled files and, for the next look, what this one saw of
    the others: a file appearing or still growing is taken one tick later, whole.
    """
    settled, observed = [], {}
    for path in pending_files(inbox):
        try:
            stat = path.stat()
        except FileNotFoundError:  # moved away between the listing and now
            continue
        now = [stat.st_size, stat.st_mtime_ns]
        if seen.get(path.name) == now:
            settled.append(path)
        else:
            observed[path.name] = now
    return settled, observed


def _read(path: Path) -> pl.DataFrame:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            frame = pl.read_ndjson(path, infer_schema_length=None)
        except Exception as exc:  # polars raises several types for broken JSON
            raise SourceError(f"{path}: cannot be read as JSON lines: {exc}") from exc
        if frame.height == 0:
            raise SourceError(f"{path}: the file has no data rows")
        return frame
    return read_table(path)


def read_feedback(path: Path, batch_id: str) -> pl.DataFrame:
    """Raw interactions (text values, provenance) from one feedback file; SourceError if unusable."""
    frame = _read(path)
    has_rating, has_event = "rating" in frame.columns, "event_type" in frame.columns
    if not (has_rating or has_event):
        raise SourceError(f"{path}: needs a rating or an event_type column; the file has {frame.columns}")
    raw = select_columns(frame, {"user_id": "user_id", "item_id": "item_id",
                                 "rating": "rating" if has_rating else None, "timestamp": "timestamp",
                                 "event_type": "event_type" if has_event else None}, str(path))
    from_event = pl.col("event_type").str.strip_chars().str.to_lowercase().replace_strict(
        {k: str(v) for k, v in EVENT_RATINGS.items()}, default=None, return_dtype=pl.String)
    raw = raw.with_columns(rating=pl.coalesce(pl.col("rating"), from_event))
    return with_provenance(raw, str(path), batch_id)


def move(path: Path, inbox: Path, folder: str, reason: str | None = None) -> Path:
    """Move a file to ``inbox/<folder>`` (never overwriting), with a reason file if given."""
    target_dir = inbox / folder
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    counter = 1
    while target.exists():
        target = target_dir / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    shutil.move(str(path), target)
    if reason:
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
    return target


def triage(inbox: Path, requested: dict[str, str],
           files: list[Path] | None = None) -> tuple[list[tuple[Path, str]], int, int]:
    """Decide what to do with each waiting file, for the inbox sensor.

    ``requested`` maps the content hash of every file already requested to its file name (the
    sensor's cursor). Returns ``(new files with their hashes, duplicates moved, rejected moved)``:
    a file whose content was already requested under another name moves to ``duplicates``; a
    file that cannot be read as feedback moves to ``rejected`` with its reason; a file already
    requested under its own name is waiting for its run and is left alone. ``files``: only
    these (the settled ones), default every pending file.
    """
    new, duplicates, rejected = [], 0, 0
    for path in pending_files(inbox) if files is None else files:
        digest = content_hash(path)
        if digest in requested or digest in {d for _, d in new}:
            first = requested.get(digest) or next(p.name for p, d in new if d == digest)
            if first != path.name:
                move(path, inbox, DUPLICATES, f"same content as {first} ({digest}), already requested")
                duplicates += 1
            continue
        try:
            read_feedback(path, batch_id="check")
        except SourceError as exc:
            move(path, inbox, REJECTED, str(exc))
            rejected += 1
            continue
        new.append((path, digest))
    return new, duplicates, rejected


def ingest_files(files: list[Path], inbox: Path, done: set[str],
                 store: Callable[[pl.DataFrame, str, Path], None],
                 warn: Callable[[str], None] = lambda message: None) -> dict[str, int]:
    """Read each file once: ``store(rows, content hash, path)`` what parses, then archive it;
    a file whose content was ingested before goes to duplicates, an unusable one to rejected
    with its reason; a file already moved by an earlier try of the same request is counted
    as missing. ``done``: content hashes already ingested (updated). Returns the counts."""
    counts = {"ingested": 0, "rows": 0, "already_ingested": 0, "rejected": 0, "missing": 0}
    for path in files:
        if not path.exists():
            counts["missing"] += 1
            continue
        digest = content_hash(path)
        if digest in done:
            move(path, inbox, DUPLICATES, f"same content as an ingested file ({digest})")
            counts["already_ingested"] += 1
            continue
        try:
            rows = read_feedback(path, batch_id=f"feedback-{digest[:16]}")
        except SourceError as exc:
            move(path, inbox, REJECTED, str(exc))
            warn(f"rejected {path.name}: {exc}")
            counts["rejected"] += 1
            continue
        store(rows, digest, path)
        move(path, inbox, ARCHIVE)
        done.add(digest)
        counts["ingested"] += 1
        counts["rows"] += rows.height
    return counts

