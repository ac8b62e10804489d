"""User and item ids: kept as the source's values, typed as integers or as text.

``id_type="int"`` (the default, as in MovieLens) parses ids as 64-bit integers, so that SQL users
write ``user_id = 42`` and ids sort numerically (the split protocol sorts item ids); a value that
is not an integer is unparseable and its row goes to quarantine. ``id_type="str"`` keeps any
non-blank text as the id.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

IdType = Literal["int", "str"]


def id_dtype(id_type: IdType) -> pl.DataType:
    """The polars dtype of ids of this type."""
    return pl.Int64() if id_type == "int" else pl.String()


def parse_id(text: pl.Expr, id_type: IdType) -> pl.Expr:
    """Parsed id, or null where the text is blank or (for int ids) not an integer."""
    stripped = text.str.strip_chars()
    blank_as_null = pl.when(stripped == "").then(None).otherwise(stripped)
    if id_type == "int":
        return blank_as_null.cast(pl.Int64, strict=False)
    return blank_as_null


class CatalogueMismatchError(RuntimeError):
    """Two stored artefacts disagree about which users or items exist: one of them is stale."""


def positions(sorted_ids: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """Positions of ``values`` in the ascending ``sorted_ids``; every value must be present.

    A silent ``searchsorted`` would map an unknown id onto a neighbour's position, so a stale
    artefact (an index built before the catalogue changed) would recall the wrong items.
    """
    values = np.asarray(values)
    sorted_ids = np.asarray(sorted_ids)
    found = np.searchsorted(sorted_ids, values)
    if len(sorted_ids):
        present = sorted_ids[np.minimum(found, len(sorted_ids) - 1)] == values
    else:
        present = np.zeros(len(values), dtype=bool)
    if not np.all(present):
        missing = values[~present]
        raise CatalogueMismatchError(
            f"{len(missing)} {what} not found (e.g. {missing[:5].tolist()}); the stored artefacts "
            "come from different data: re-materialize the assets downstream of the cleaned data"
        )
    return found


def require_same_ids(expected: np.ndarray, actual: np.ndarray, what: str) -> None:
    """Raise CatalogueMismatchError unless the two id arrays are identical."""
    if len(expected) != len(actual) or not np.array_equal(expected, actual):
        raise CatalogueMismatchError(
            f"{what}: {len(actual)} ids where {len(expected)} were expected, or in another order; "
            "the stored artefacts come from different data: re-materialize the assets downstream "
            "of the cleaned data together"
        )


def storable_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as an array that ``np.save`` writes without pickle: text ids (object arrays, as
    polars returns them) become fixed-width unicode, integer ids stay as they are."""
    ids = np.asarray(ids)
    return ids.astype(str) if ids.dtype == object else ids
