"""The (user, item) pairs a model version trained on, stored beside its weights
(``training_pairs.npz``), and what they keep out of later comparisons.

New feedback can move the split under a model: a pair it trained on can later be held out (in
the validation holdout, or in the warm test part). Judging or reporting the model on such a pair
would score it on what it has seen, so the champion rule leaves those pairs out of its held-out
data, and the evaluation leaves them out of its test slices. Numpy and polars only (no torch):
the evaluation reads these files too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recall_pipeline.core.ids import storable_ids

TRAINING_PAIRS_FILE = "training_pairs.npz"
PAIR = ["user_id", "item_id"]


def save_training_pairs(split: pl.DataFrame, folder: Path) -> None:
    """The distinct (user, item) pairs of the split's training part, beside the model."""
    train = split.filter(pl.col("part") == "train").select(PAIR).unique()
    np.savez_compressed(Path(folder) / TRAINING_PAIRS_FILE, user_id=storable_ids(train["user_id"].to_numpy()),
                        item_id=storable_ids(train["item_id"].to_numpy()))


def read_training_pairs(folder: Path, like: pl.DataFrame) -> pl.DataFrame | None:
    """The pairs stored in ``folder`` with ``like``'s id types; None when the folder has none
    (a model saved before pairs were stored)."""
    path = Path(folder) / TRAINING_PAIRS_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        pairs = pl.DataFrame({"user_id": stored["user_id"], "item_id": stored["item_id"]})
    return pairs.cast({"user_id": like.schema["user_id"], "item_id": like.schema["item_id"]})


def test_rows_trained_on(split: pl.DataFrame, pairs: pl.DataFrame | None) -> pl.DataFrame:
    """Rows of the split's test parts whose (user, item) the model trained on (``pairs``) although
    the split no longer has it in training: the split moved under the model. (A pair that is a
    current training pair as well as a test row, the same item interacted with again, is no
    leak: the protocol already leaves the user's training items out of the ranking.)"""
    if pairs is None:
        return split.clear()
    current = split.filter(pl.col("part") == "train").select(PAIR).unique()
    return (split.filter(pl.col("part") != "train").join(pairs.unique(), on=PAIR, how="semi")
            .join(current, on=PAIR, how="anti"))


def holdout_less_pairs(train: pl.DataFrame, pairs: pl.DataFrame | None) -> pl.DataFrame:
    """The training part with its validation holdout less every (user, item) among ``pairs``
    (the fit part untouched)."""
    if pairs is None:
        return train
    seen = train.filter(pl.col("val_part") == "holdout").join(pairs.unique(), on=PAIR, how="semi")
    return without(train, seen)


def without(split: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """``split`` less ``rows`` (matched on user, item and part, so only those parts lose them)."""
    if rows.is_empty():
        return split
    keys = [*PAIR, "part"] + (["val_part"] if "val_part" in rows.columns else [])
    return split.join(rows.select(keys).unique(), on=keys, how="anti", nulls_equal=True)
