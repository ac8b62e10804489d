"""Cleaning item metadata and composing the text the language model encodes.

The composed text follows ``docs/EVALUATION.md`` for the bundled data and extends the same
template to user data:

    <clean title> (<year>) Genres: A, B <description>

parts joined by single spaces; a missing title, year, genre list or description is left out, and
"(no genres listed)" drops the whole ``Genres:`` part. The clean title moves an English article
(``The``, ``A``, ``An``) that follows a comma at the very end of the title to the front
("Hangover, The" becomes "The Hangover"). Every text field is NFKC-normalised, has HTML tags and
entities removed and whitespace collapsed, and the composed text is capped at a word boundary.
"""

from __future__ import annotations

import html
import re
import unicodedata

import polars as pl

from recall_pipeline.core.ids import IdType, id_dtype, parse_id

NO_GENRES = "(no genres listed)"
DEFAULT_MAX_CHARS = 1000

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_TRAILING_ARTICLE = re.compile(r"^(?P<body>.+), (?P<article>The|A|An)$")


def clean_field(value: str | None) -> str | None:
    """NFKC, HTML tags and entities removed, whitespace collapsed; empty becomes None."""
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", value)
    text = html.unescape(_TAG.sub(" ", text))
    text = _SPACE.sub(" ", text).strip()
    return text or None


def fix_trailing_article(title: str | None) -> str | None:
    """Move a trailing ", The|A|An" to the front; other forms stay as they are."""
    if title is None:
        return None
    match = _TRAILING_ARTICLE.match(title)
    if match is None:
        return title
    return f"{match['article']} {match['body']}"


def split_genres(value: str | None, separator: str = "|") -> list[str]:
    """Genre or tag list from a separated string; "(no genres listed)" and blanks dropped."""
    if value is None:
        return []
    genres: list[str] = []
    for part in value.split(separator):
        genre = clean_field(part)
        if genre and genre != NO_GENRES and genre not in genres:
            genres.append(genre)
    return genres


def cap_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Cut over-long text at the last word boundary before ``max_chars``."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def compose_item_text(title: str | None, year: str | None, genres: list[str],
                      description: str | None = None,
                      max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The template above; all parts already cleaned."""
    parts = []
    if title:
        parts.append(title)
    if year:
        parts.append(f"({year})")
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if description:
        parts.append(description)
    return cap_text(" ".join(parts), max_chars)


def clean_items(raw_items: pl.DataFrame, id_type: IdType = "int", genre_separator: str = "|",
                max_chars: int = DEFAULT_MAX_CHARS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Clean raw items, merge duplicates of one item id, and compose the item text.

    Returns ``(items, quarantine)``. Items whose id is blank or does not parse as ``id_type``
    go to quarantine with a reason.
    Rows sharing an id are merged: the first non-empty title, year and description in source
    order win, genre lists are united. ``items`` has one row per id with ``item_id``, ``title``,
    ``year``, ``genres`` (list), ``description``, ``item_text`` and ``source_rows`` (how many raw
    rows were merged into it), so raw rows = sum(source_rows) + quarantined rows.
    """
    raw = raw_items.sort("source_row").with_columns(parsed_id=parse_id(pl.col("item_id"), id_type))
    blank = pl.col("item_id").str.strip_chars().fill_null("") == ""
    quarantine = raw.filter(pl.col("parsed_id").is_null()).select(
        *raw_items.columns,
        pl.when(blank).then(pl.lit("null_item_id")).otherwise(pl.lit("unparseable_item_id"))
        .alias("reason"),
        pl.when(blank).then(pl.lit("the item id is empty"))
        .otherwise(pl.format("item id {} is not an integer", pl.col("item_id"))).alias("detail"),
    )
    good = raw.filter(pl.col("parsed_id").is_not_null()).with_columns(item_id=pl.col("parsed_id"))
    records: dict[str, dict] = {}
    for row in good.iter_rows(named=True):
        title = fix_trailing_article(clean_field(row["title"]))
        year = clean_field(row["year"])
        description = clean_field(row["description"])
        genres = split_genres(row["genres"], genre_separator)
        entry = records.get(row["item_id"])
        if entry is None:
            records[row["item_id"]] = {"item_id": row["item_id"], "title": title, "year": year,
                                       "genres": genres, "description": description,
                                       "source_rows": 1}
            continue
        entry["title"] = entry["title"] or title
        entry["year"] = entry["year"] or year
        entry["description"] = entry["description"] or description
        entry["genres"] = entry["genres"] + [g for g in genres if g not in entry["genres"]]
        entry["source_rows"] += 1
    items = pl.DataFrame(
        list(records.values()),
        schema={"item_id": id_dtype(id_type), "title": pl.String, "year": pl.String,
                "genres": pl.List(pl.String), "description": pl.String, "source_rows": pl.Int64},
    )
    items = items.with_columns(
        pl.struct("title", "year", "genres", "description")
        .map_elements(lambda r: compose_item_text(r["title"], r["year"], r["genres"] or [],
                                                  r["description"], max_chars),
                      return_dtype=pl.String)
        .alias("item_text")
    )
    return items, quarantine
