"""User and item ids: kept as the source's values, typed as integers or as text.

``id_type="int"`` (the default, as in MovieLens) parses ids as 64-bit integers, so that SQL users
write ``user_id = 42`` and ids sort numerically (the split protocol sorts item ids); a value that
is not an integer is unparseable and its row goes to quarantine. ``id_type="str"`` keeps any
non-blank text as the id.
"""

from __future__ import annotations

from typing import Literal

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
