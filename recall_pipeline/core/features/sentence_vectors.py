"""Encoded interest sentences kept between runs, so that a run encodes only the sentences its
stage has not seen.

Three stages encode users' interest sentences (``features.user_profiles``: "Likes ... Recently
liked ..."): ``user_profiles`` for every user, ``text_cf_model`` for the pseudo-cold users' fit
part, ``route_settings`` for the validation users' fit part. At M (20,000 users) that is 262 s
of the job, and on a nightly run most of those sentences are the ones of the night before. Each
stage keeps the sentences of its last run in a file of its own and looks its sentences up there
first, by exact text and the encoder's key (weights, precision, maximum length), so a vector is
only ever reused for the same text under the same model. A stage reads only its own file, so
what it computes never depends on which other stage ran first (the executors order them
differently). One writer per file, written under a temporary name and renamed, as the models
are. The files are a cache: one that cannot be read is skipped with a warning and rewritten.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl

log = logging.getLogger(__name__)


class SentenceStore:
    """One stage's kept sentences: ``<folder>/<stage>.parquet`` (text, model, embedding)."""

    def __init__(self, folder: Path, stage: str) -> None:
        self.path = Path(folder) / f"{stage}.parquet"

    def lookup(self, texts: Sequence[str], model: str) -> pl.DataFrame | None:
        """(text, embedding) of those of ``texts`` the file holds under ``model`` (None: no file)."""
        if not self.path.exists():
            return None
        wanted = pl.DataFrame({"text": pl.Series(list(texts), dtype=pl.String)})
        try:
            return (pl.scan_parquet(self.path).filter(pl.col("model") == model)
                    .join(wanted.lazy(), on="text", how="semi").select("text", "embedding").collect())
        except (OSError, pl.exceptions.PolarsError) as error:  # a cache: rewritten by the stage's save
            log.warning(f"kept sentences {self.path} unreadable, encoding their texts again: {error}")
            return None

    def save(self, table: pl.DataFrame) -> list[str]:
        """Replace the file with ``table`` (text, model, embedding); returns the names of the
        temporary files a killed save had left behind, which it removed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        for stale in leftovers:
            stale.unlink(missing_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        table.write_parquet(tmp)
        os.replace(tmp, self.path)
        return [stale.name for stale in leftovers]


class ReusingEncoder:
    """``encode`` (texts -> unit vectors) that looks each distinct text up in ``store`` first and
    encodes only the rest, once per distinct text. After the calls, :attr:`table` holds every
    text it was asked for (text, model, embedding) for the stage to save, and :attr:`reused` and
    :attr:`encoded` count distinct texts."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], model: str, store: SentenceStore | None) -> None:
        self._encode, self.model, self.store = encode, model, store
        self._texts: list[str] = []
        self._vectors: list[np.ndarray] = []
        self.reused = self.encoded = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:  # the encoder's own empty answer (its width)
            return np.asarray(self._encode([]), dtype=np.float32)
        distinct = list(dict.fromkeys(texts))
        found = self.store.lookup(distinct, self.model) if self.store is not None else None
        known = found["text"].to_list() if found is not None and found.height else []
        known_set = set(known)
        missing = [text for text in distinct if text not in known_set]
        parts = [(known, _matrix(found["embedding"]))] if known else []
        if missing:
            parts.append((missing, np.asarray(self._encode(missing), dtype=np.float32)))
        order = [text for names, _ in parts for text in names]
        vectors = np.vstack([matrix for _, matrix in parts])
        self.reused += len(known)
        self.encoded += len(missing)
        self._texts += order
        self._vectors.append(vectors)
        slot = {text: i for i, text in enumerate(order)}
        return vectors[[slot[text] for text in texts]]

    @property
    def table(self) -> pl.DataFrame:
        """text, model, embedding of every distinct text asked for so far."""
        if not self._vectors:
            return pl.DataFrame(schema={"text": pl.String, "model": pl.String, "embedding": pl.List(pl.Float32)})
        return pl.DataFrame({"text": pl.Series(self._texts, dtype=pl.String),
                             "model": pl.Series([self.model] * len(self._texts), dtype=pl.String),
                             "embedding": np.vstack(self._vectors)}).unique("text", keep="last", maintain_order=True)

    def summary(self) -> str:
        return f"{self.encoded} interest sentences encoded, {self.reused} reused"


def _matrix(column: pl.Series) -> np.ndarray:
    """A column of equal-length vectors (list or array) as a float32 matrix."""
    return np.ascontiguousarray(column.cast(pl.Array(pl.Float32, len(column[0]))).to_numpy(), dtype=np.float32)


def model_key(encoder) -> str:
    """What a kept sentence vector depends on besides its text: the encoder's weights and
    precision (:meth:`ModelIdentity.key`) and its maximum length in tokens (truncation)."""
    return f"{encoder.identity.key()}/max{encoder.max_length}"
