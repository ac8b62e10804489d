"""The train / warm test / cold test split of ``docs/EVALUATION.md``, reproduced exactly.

1. Cold items: the distinct item ids sorted ascending, shuffled with
   ``numpy.random.default_rng(seed).permutation``; the first ``int(cold_fraction * n)`` are cold.
   Every interaction with a cold item is ``cold_test``. That permutation assigns the items of
   the first split only: it is stored (``item_sides``), and an item that appears later keeps the
   side a seeded hash of its id gives it (cold when the hash falls below ``cold_fraction``), so
   new items never move an existing item between cold and warm (see :func:`item_sides`).
2. Per user, the remaining interactions sorted by (timestamp, item id): the last
   ``ceil(test_fraction * n)`` are ``warm_test``, the rest ``train``.
3. Relevant = rating >= the threshold (every interaction when ratings are absent).
4. The validation cut applies rule 2 again inside ``train`` (``val_part`` 'fit' / 'holdout').
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

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
    """The cold item set C of a first split, in permutation order (the protocol's rule 1)."""
    distinct = np.sort(np.unique(item_ids))
    shuffled = np.random.default_rng(protocol.seed).permutation(distinct)
    return shuffled[: int(protocol.cold_fraction * len(distinct))]


SIDE_COLUMNS = ("item_id", "is_cold", "rule", "seed", "cold_fraction")
RULE_PERMUTATION, RULE_HASH = "permutation", "hash"


def hash_is_cold(item_id, protocol: SplitProtocol) -> bool:
    """The side of an item that appears after the first split: cold when a seeded SHA-256 of its
    id, read as a number in [0, 1), is below ``cold_fraction``. It depends on nothing but the
    id and the protocol, so it is the same in every run and for every other item set."""
    digest = hashlib.sha256(f"{protocol.seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < protocol.cold_fraction


def item_sides(item_ids, protocol: SplitProtocol = SplitProtocol(),
               previous: pl.DataFrame | None = None) -> pl.DataFrame:
    """Which side (cold or warm) every item is on: ``item_id``, ``is_cold``, ``rule`` (which rule
    assigned it), ``seed``, ``cold_fraction``.

    Without ``previous`` this is the protocol's rule 1 on the distinct ``item_ids``. With
    ``previous`` (what an earlier split stored), every item it holds keeps its side, and only
    the items it lacks are assigned, each by :func:`hash_is_cold`: adding items never reshuffles
    the cold set. The result keeps the items of ``previous`` that ``item_ids`` no longer holds,
    so an item that comes back later returns to its side. A ``previous`` made under another
    seed or cold fraction, with another id type, or sharing no item with ``item_ids`` (another
    data set) is ignored: the assignment starts over with rule 1."""
    ids = pl.Series("item_id", item_ids).unique().sort()
    if _continues(previous, ids, protocol):
        known = previous.select(SIDE_COLUMNS)
        new = ids.filter(~ids.is_in(known["item_id"].implode()))
        added = pl.DataFrame({"item_id": new, "is_cold": [hash_is_cold(i, protocol) for i in new.to_list()]},
                             schema_overrides={"is_cold": pl.Boolean})
        return pl.concat([known, _with_protocol(added, RULE_HASH, protocol)]).sort("item_id")
    cold = cold_items(ids.to_numpy(), protocol)
    first = pl.DataFrame({"item_id": ids}).with_columns(
        is_cold=pl.col("item_id").is_in(pl.Series(cold.tolist(), dtype=ids.dtype).implode()))
    return _with_protocol(first, RULE_PERMUTATION, protocol)


def _continues(previous: pl.DataFrame | None, ids: pl.Series, protocol: SplitProtocol) -> bool:
    """Whether ``previous`` is an earlier assignment of this data set under this protocol."""
    return (previous is not None and not previous.is_empty() and set(SIDE_COLUMNS) <= set(previous.columns)
            and previous.schema["item_id"] == ids.dtype
            and previous.select("seed", "cold_fraction").unique().rows() == [(protocol.seed, protocol.cold_fraction)]
            and bool(ids.is_in(previous["item_id"].implode()).any()))


def _with_protocol(frame: pl.DataFrame, rule: str, protocol: SplitProtocol) -> pl.DataFrame:
    return frame.with_columns(rule=pl.lit(rule), seed=pl.lit(protocol.seed, pl.Int64),
                              cold_fraction=pl.lit(protocol.cold_fraction, pl.Float64)).select(SIDE_COLUMNS)


def _last_fraction(fraction: float) -> pl.Expr:
    """True for each user's last ceil(fraction * n) rows (the frame is sorted by time, item)."""
    position = pl.int_range(pl.len()).over("user_id")
    count = pl.len().over("user_id")
    return position >= count - (count * fraction).ceil()


def split_interactions(clean: pl.DataFrame, protocol: SplitProtocol = SplitProtocol(),
                       sides: pl.DataFrame | None = None) -> pl.DataFrame:
    """Clean interactions with ``part``, ``val_part`` and ``is_relevant`` columns.

    ``sides`` (from :func:`item_sides`) says which items are cold; by default the protocol's
    rule 1 on the items of ``clean``. Rows come back sorted by (user, timestamp, item id) within
    each part.
    """
    if sides is None:
        sides = item_sides(clean["item_id"], protocol)
    cold = sides.filter("is_cold")["item_id"].cast(clean.schema["item_id"])
    frame = clean.select("user_id", "item_id", "rating", "timestamp").with_columns(
        is_cold=pl.col("item_id").is_in(cold.implode()),
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


def split_keeping_sides(clean: pl.DataFrame, catalogue: pl.Series, protocol: SplitProtocol = SplitProtocol(),
                        previous: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the split, the item sides to store for the next split): every item of the catalogue
    and of the interactions gets a side (:func:`item_sides`, keeping ``previous``), so an item
    nobody has interacted with yet is already placed when its first interaction arrives. For
    the bundled data every movie has ratings, so rule 1 runs on the protocol's 9,066 ids."""
    sides = item_sides(pl.concat([catalogue.alias("item_id"), clean["item_id"]]), protocol, previous)
    return split_interactions(clean, protocol, sides), sides


def pseudo_cold_split(split: pl.DataFrame, protocol: SplitProtocol = SplitProtocol(),
                      fraction: float = 0.1) -> pl.DataFrame:
    """The protocol's rule 4 as a split of its own, made from the training part alone (the test
    parts are never read): a seeded ``fraction`` of the training items (rule 1's permutation
    over the distinct training item ids; items of C have no training rows, so none is chosen)
    are pseudo-cold and all their interactions are ``cold_test``; the other training rows are
    cut per user by rule 2 (``warm_test`` is the validation holdout, ``train`` the fit part) and
    the fit part again (``val_part``) for early stopping. Choices among variants are made on its
    ``warm_test`` (warm validation) and ``cold_test`` (pseudo-cold validation) parts."""
    train = split.filter(pl.col("part") == "train").select("user_id", "item_id", "rating", "timestamp")
    pseudo = replace(protocol, cold_fraction=fraction)
    return split_interactions(train, pseudo, item_sides(train["item_id"], pseudo))


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
