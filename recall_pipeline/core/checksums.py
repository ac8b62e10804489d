"""SHA-256 of files, read in blocks: for index files, model weights and feedback files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_sha256(frame) -> str:
    """A checksum of a polars frame's values in the given row order (for data snapshots)."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame[name]
        digest.update(name.encode())
        digest.update(column.cast(str).fill_null("\0").str.join("\n").item().encode()
                      if column.dtype.is_temporal() or not column.dtype.is_numeric()
                      else column.fill_null(0).to_numpy().tobytes())
    return digest.hexdigest()
