"""The EASE model of the last full refresh, kept in the home folder (``models/ease/ease.npz``).

The ``ease_model`` asset solves EASE over the whole training matrix once per full refresh
(seconds to minutes, memory bounded by the solve) and stores it here; ``recall_candidates``
scores every user with it, and ad-hoc recall reads it too. A feedback refresh changes a few users' histories; it
scores those users with the stored model instead of solving again, as it does with the two-tower
champion and the LM index. The model is one ``.npz`` file (no pickle), written under a temporary
name and renamed into place, so a reader gets the previous model or the new one, never half.
It records what it was fitted on (the catalogue's item ids, the regularisation, the item cap, the
windowed term's settings and the run that fitted it): a model that does not match the current
catalogue or settings is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.training.ease.model import EaseModel

ARRAYS = ("weights", "columns", "kinv_x", "diag_p")


def ids_sha256(ids: np.ndarray) -> str:
    """A checksum of a sorted id list (ints or text)."""
    return hashlib.sha256("\n".join(map(str, np.asarray(ids).tolist())).encode()).hexdigest()


@dataclass(frozen=True)
class StoredEase:
    """The stored model and what it was fitted on."""

    model: EaseModel
    fit_run: str          # the Dagster run that solved it (part of every recall run's basis)
    items_sha256: str
    max_items: int
    # training interactions per item over all users when it was fitted: the popularity route's
    # and the popularity discount's counts in the feedback refreshes that reuse the model, so that
    # the lists of users they copy and of users they recompute rest on the same counts (None: a
    # model stored before the counts were kept)
    item_counts: np.ndarray | None = None

    @property
    def fit_settings(self) -> tuple[float, int, int, float]:
        """(lambda, item cap, window, window weight) it was fitted with."""
        return self.model.lam, self.max_items, self.model.window, self.model.window_weight

    def matches(self, item_ids: np.ndarray, lam: float, max_items: int, window: int = 0,
                window_weight: float = 0.0) -> str | None:
        """Why this model cannot serve the current catalogue and settings (None: it can)."""
        if self.items_sha256 != ids_sha256(item_ids):
            return "the catalogue changed since the stored EASE model was fitted"
        stored = (self.model.lam, self.max_items, *_term(self.model.window, self.model.window_weight))
        if stored != (float(lam), int(max_items), *_term(window, window_weight)):
            return (f"the EASE settings changed (stored lambda, max items, window, window weight {stored}; "
                    f"now {(lam, max_items, window, window_weight)})")
        return None


def _term(window: int, weight: float) -> tuple[int, float]:
    """A windowed term as (window, weight); weight 0 or window 0 is no term at all: (0, 0.0)."""
    return (0, 0.0) if weight <= 0 or window < 1 else (int(window), float(weight))


def save_ease(model: EaseModel, path: Path, item_ids: np.ndarray, fit_run: str, max_items: int,
              item_counts: np.ndarray | None = None) -> None:
    """Write the model (and the item counts of its fit, see :class:`StoredEase`) beside ``path``
    and rename it onto ``path`` (atomic on one file system)."""
    if model.sequence is not None and model.form != "woodbury":
        raise ValueError("an EASE model whose windowed term is kept apart (fold=False) is for the validation cut, "
                         "not stored: fit it folded")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"lam": float(model.lam), "n_items": int(model.n_items), "fit_run": fit_run,
            "items_sha256": ids_sha256(item_ids), "max_items": int(max_items), "window": int(model.window),
            "window_weight": float(model.window_weight), "sequence_scale": float(model.sequence_scale)}
    arrays = {name: getattr(model, name) for name in ARRAYS if getattr(model, name) is not None}
    if item_counts is not None:
        arrays["item_counts"] = np.asarray(item_counts, dtype=np.int64)
    if model.fit is not None:
        fit = model.fit.tocsr()
        arrays.update(fit_indptr=fit.indptr, fit_indices=fit.indices, fit_shape=np.array(fit.shape))
    if model.sequence is not None:
        pairs = model.sequence.tocsr()
        arrays.update(sequence_indptr=pairs.indptr, sequence_indices=pairs.indices, sequence_data=pairs.data,
                      sequence_shape=np.array(pairs.shape))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:  # a file handle: savez would append .npz to a bare name
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def reusable_ease(path: Path, item_ids: np.ndarray, lam: float | None = None, max_items: int | None = None,
                  window: int = 0, window_weight: float = 0.0) -> tuple[StoredEase | None, str]:
    """(the stored model if it fits the current catalogue and, when ``lam`` is given, these
    settings; else None; why)."""
    stored = load_ease(path)
    if stored is None:
        return None, "no stored EASE model yet (the ease_model asset stores one)"
    if lam is None:
        why = stored.matches(item_ids, *stored.fit_settings)
    else:
        why = stored.matches(item_ids, lam, max_items, window, window_weight)
    return (None, why) if why else (stored, f"the EASE model fitted by run {stored.fit_run}")


def load_ease(path: Path) -> StoredEase | None:
    """The stored model, or None when no full refresh has stored one yet."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        arrays = {name: stored[name] for name in ARRAYS if name in stored}
        fit = None
        if "fit_indptr" in stored:
            indices = stored["fit_indices"]
            fit = sp.csr_matrix((np.ones(len(indices)), indices, stored["fit_indptr"]),
                                shape=tuple(stored["fit_shape"]))
        counts = stored["item_counts"] if "item_counts" in stored else None
        sequence = None
        if "sequence_indptr" in stored:
            sequence = sp.csr_matrix((stored["sequence_data"], stored["sequence_indices"], stored["sequence_indptr"]),
                                     shape=tuple(stored["sequence_shape"]))
    # a model stored before the windowed term existed: EASE alone (window 0)
    model = EaseModel(meta["lam"], meta["n_items"], fit=fit, sequence=sequence,
                      sequence_scale=meta.get("sequence_scale", 0.0), window=meta.get("window", 0),
                      window_weight=meta.get("window_weight", 0.0), **arrays)
    return StoredEase(model, meta["fit_run"], meta["items_sha256"], meta["max_items"], counts)
