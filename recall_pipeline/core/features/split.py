"""The train / warm test / cold test split of ``docs/EVALUATION.md``, reproduced exactly.

1. Cold items: the distinct item ids sorted ascending, shuffled with
   ``numpy.random.default_rng(seed).permutation``; the first ``int(cold_fraction * n)`` are cold.
   Every interaction with a cold item is ``cold_test``.
2. Per user, the remaining interactions sorted by (timestamp, item id): the last
   ``ceil(test_fraction * n)`` are ``warm_test``, the rest ``train``.
3. Relevant = rating >= the threshold (every interaction when ratings are absent).
4. The validation cut applies rule 2 again inside ``train`` (``val_part`` 'fit' / 'holdout').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

PARTS = ("train", "warm_test", "cold_test")


@dataclass(frozen=True)
class SplitProtocol:
    """The protocol's parameters; the defaults are the reference benchmark's."""

    cold_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    relevance_threshold: float = 4.0


def cold_items(item_ids: np.ndarray, protocol: SplitProtocol) -> np.ndarray:
    """The cold item set C, in permutation order."""
    distinct = np.sort(np.unique(item_ids))
    shuffled = np.random.default_rng(protocol.seed).permutation(distinct)
    return shuffled[: int(protocol.cold_fraction * len(distinct))]


def _last_fraction(fraction: float) -> pl.Expr:
    """True for each user's last ceil(fraction * n) rows (the frame is sorted by time, item)."""
    position = pl.int_range(pl.len()).over("user_id")
    count = pl.len().over("user_id")
    return position >= count - (count * fraction).ceil()


def split_interactions(clean: pl.DataFrame, protocol: SplitProtocol = SplitProtocol()) -> pl.DataFrame:
    """Clean interactions with ``part``, ``val_part`` and ``is_relevant`` columns.

    Rows come back sorted by (user, timestamp, item id) within each part.
    """
    cold = cold_items(clean["item_id"].to_numpy(), protocol)
    frame = clean.select("user_id", "item_id", "rating", "timestamp").with_columns(
        is_cold=pl.col("item_id").is_in(pl.Series(cold.tolist(), dtype=clean.schema["item_id"]).implode()),
        is_relevant=pl.col("rating").is_null() | (pl.col("rating") >= protocol.relevance_threshold),
    )
    warm = frame.filter(~pl.col("is_cold")).sort("user_id", "timestamp", "item_id")
    warm = warm.with_columns(
        part=pl.when(_last_fraction(protocol.test_fraction))
        .then(pl.lit("warm_test")).otherwise(pl.lit("train"))
    )
    train = warm.filter(pl.col("part") == "train")
    train = train.with_columns(
        val_part=pl.when(_last_fraction(protocol.test_fraction))
        .then(pl.lit("holdout")).otherwise(pl.lit("fit"))
    )
    test = warm.filter(pl.col("part") == "warm_test").with_columns(val_part=pl.lit(None, pl.String))
    cold_rows = (
        frame.filter(pl.col("is_cold"))
        .sort("user_id", "timestamp", "item_id")
        .with_columns(part=pl.lit("cold_test"), val_part=pl.lit(None, pl.String))
    )
    columns = ["user_id", "item_id", "rating", "timestamp", "part", "val_part", "is_relevant"]
    return pl.concat([train.select(columns), test.select(columns), cold_rows.select(columns)])


def split_summary(split: pl.DataFrame, sparse_max_train: int = 30) -> dict[str, int]:
    """The quantities of the protocol's check table, for metadata and tests."""
    train = split.filter(pl.col("part") == "train")
    warm = split.filter(pl.col("part") == "warm_test")
    cold = split.filter(pl.col("part") == "cold_test")
    warm_users = warm.filter("is_relevant")["user_id"].unique()
    train_counts = train.group_by("user_id").len()
    sparse = train_counts.filter(
        (pl.col("len") <= sparse_max_train) & pl.col("user_id").is_in(warm_users.implode())
    )
    return {
        "cold_items": cold["item_id"].n_unique(),
        "cold_interactions": cold.height,
        "train_interactions": train.height,
        "train_users": train["user_id"].n_unique(),
        "train_items": train["item_id"].n_unique(),
        "warm_test_interactions": warm.height,
        "warm_test_relevant": int(warm["is_relevant"].sum()),
        "warm_slice_users": warm_users.len(),
        "sparse_slice_users": sparse.height,
        "cold_slice_users": cold.filter("is_relevant")["user_id"].n_unique(),
        "cold_relevant": int(cold["is_relevant"].sum()),
        "validation_fit": int((train["val_part"] == "fit").sum()),
        "validation_holdout": int((train["val_part"] == "holdout").sum()),
    }
