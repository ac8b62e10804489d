"""The training data: each user's interactions in time order, flattened into one array.

A training example is a next-item prediction: an interaction is the target and the user's
interactions before it (in time order) are the history. Keeping all users in flat arrays, with
each entry knowing where its user's sequence starts, lets a batch of examples anywhere in the
data cut its history windows with one vectorised gather, and the same windows serve the users'
last histories at serving time (``last_windows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.ids import positions


@dataclass(frozen=True)
class Sequences:
    """Users' interactions in time order, flattened: ``items`` are catalogue positions."""

    items: np.ndarray      # int64, catalogue positions
    ratings: np.ndarray    # float32, NaN for implicit feedback
    starts: np.ndarray     # per flat entry, the flat index where its user's sequence starts
    users: np.ndarray      # per flat entry, the user's row

    def last_windows(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user rows, history windows, ratings) of each user's last ``length`` interactions."""
        if not len(self.users):
            return (np.zeros(0, np.int64), np.zeros((0, length), np.int64), np.zeros((0, length), np.float32))
        ends = np.flatnonzero(np.r_[self.users[1:] != self.users[:-1], True]) + 1
        return (self.users[ends - 1], *self.windows(ends, length))

    def windows(self, ends: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``length`` entries of the same user before each flat index in ``ends`` (ends
        exclusive, at least one entry of the user before each), right-aligned, -1 padded."""
        idx = ends[:, None] - length + np.arange(length)[None, :]
        valid = idx >= self.starts[ends - 1][:, None]
        safe = np.clip(idx, 0, None)
        items = np.where(valid, self.items[safe], -1)
        ratings = np.where(valid, self.ratings[safe], np.nan)
        return items.astype(np.int64), ratings.astype(np.float32)

    def seen(self, shape: tuple[int, int]) -> sp.csr_matrix:
        """The interactions as a (user rows x catalogue positions) matrix: what validation excludes."""
        return sp.csr_matrix((np.ones(len(self.items)), (self.users, self.items)), shape=shape)

    def target_examples(self) -> np.ndarray:
        """Flat indices that can be a target: every interaction with at least one before it."""
        return np.flatnonzero(np.arange(len(self.items)) > self.starts)


def build_sequences(interactions: pl.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> Sequences:
    """Sequences of ``interactions`` (user_id, item_id, rating, timestamp) on the given id axes,
    each user's sorted by (timestamp, item id) like the protocol's split."""
    frame = interactions.sort("user_id", "timestamp", "item_id")
    users = positions(user_ids, frame["user_id"].to_numpy(), "users of the training sequences")
    items = positions(item_ids, frame["item_id"].to_numpy(), "items of the training sequences")
    ratings = frame["rating"].cast(pl.Float32).fill_null(float("nan")).to_numpy()
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    starts = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0)) if len(users) else users
    return Sequences(items.astype(np.int64), np.asarray(ratings, np.float32), starts, users)
