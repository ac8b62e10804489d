"""User profiles from item embeddings: a rating- and recency-weighted mean of the history.

A user's vector is the normalised sum of their training items' embeddings, each weighted by
``rating / rating_max`` (1 for implicit feedback) times ``0.5 ** (age / half_life)``, where age is
the time between the interaction and the user's latest training interaction. Recent, well-liked
items therefore pull the profile hardest, and the whole history still counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.ids import positions

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class UserProfiles:
    """Unit-norm profile vectors for the users with training history."""

    user_ids: np.ndarray
    vectors: np.ndarray
    history_sizes: np.ndarray


def history_weights(train: pl.DataFrame, rating_max: float = 5.0,
                    half_life_days: float = 365.0) -> pl.DataFrame:
    """``train`` with a ``weight`` column: rating share times recency decay within the user."""
    age_days = (
        (pl.col("timestamp").max().over("user_id") - pl.col("timestamp")).dt.total_seconds()
        / SECONDS_PER_DAY
    )
    rating_share = (pl.col("rating") / rating_max).fill_null(1.0)
    return train.with_columns(weight=rating_share * (0.5 ** (age_days / half_life_days)))


def build_user_profiles(train: pl.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray,
                        rating_max: float = 5.0, half_life_days: float = 365.0) -> UserProfiles:
    """Profiles of every user in ``train`` (columns user_id, item_id, rating, timestamp).

    ``item_ids`` must be sorted ascending and aligned with the rows of ``item_vectors``.
    """
    weighted = history_weights(train, rating_max, half_life_days)
    user_ids = np.sort(weighted["user_id"].unique().to_numpy())
    rows = positions(user_ids, weighted["user_id"].to_numpy(), "users")
    cols = positions(item_ids, weighted["item_id"].to_numpy(), "training items among the embeddings")
    weights = sp.csr_matrix((weighted["weight"].to_numpy(), (rows, cols)),
                            shape=(len(user_ids), len(item_ids)))
    vectors = np.asarray(weights @ item_vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, 1e-12)
    sizes = np.bincount(rows, minlength=len(user_ids))
    return UserProfiles(user_ids, vectors, sizes)
