"""Item text cleaning rules and the composed text of docs/EVALUATION.md."""

from datetime import datetime

import polars as pl
import pytest

from recall_pipeline.core.ingest.item_text import (
    cap_text, clean_field, clean_items, compose_item_text, fix_trailing_article, split_genres,
)


def raw_items(rows: list[dict]) -> pl.DataFrame:
    schema = {c: pl.String for c in ("item_id", "title", "year", "genres", "description")}
    frame = pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)
    return frame.with_columns(source_file=pl.lit("items.csv"),
                              source_row=pl.int_range(1, frame.height + 1, dtype=pl.Int64),
                              batch_id=pl.lit("b"), loaded_at=pl.lit(datetime(2026, 1, 1)))


@pytest.mark.parametrize("raw, clean", [
    ("  Alien \n\t Resurrection ", "Alien Resurrection"),
    ("Am\u00e9lie", "Amélie"),
    ("Ame\u0301lie", "Amélie"),                     # combining accent composed by NFKC
    ("\uff21\uff4c\uff49\uff45\uff4e", "Alien"),   # full-width letters
    ("<b>Alien</b> &amp; <i>Aliens</i>", "Alien & Aliens"),
    ("Tom &amp; Jerry&nbsp;Show", "Tom & Jerry Show"),
    ("   ", None),
    ("<br/>", None),
    (None, None),
])
def test_clean_field(raw, clean):
    assert clean_field(raw) == clean


@pytest.mark.parametrize("title, fixed", [
    ("Hangover, The", "The Hangover"),
    ("Raisin in the Sun, A", "A Raisin in the Sun"),
    ("Officer and a Gentleman, An", "An Officer and a Gentleman"),
    ("Good, the Bad, the Weird, The", "The Good, the Bad, the Weird"),
    ("Taste of Others, The (Le goût des autres)", "Taste of Others, The (Le goût des autres)"),
    ("Hangover, the", "Hangover, the"),        # only the capitalised English articles
    ("Los Angeles, Los", "Los Angeles, Los"),  # other languages' articles stay
    ("The Matrix", "The Matrix"),
])
def test_trailing_article(title, fixed):
    assert fix_trailing_article(title) == fixed


def test_genres_and_composition():
    assert split_genres("Comedy|Drama||Comedy") == ["Comedy", "Drama"]
    assert split_genres("(no genres listed)") == []
    assert compose_item_text("Toy Story", "1995", ["Animation", "Comedy"]) == \
        "Toy Story (1995) Genres: Animation, Comedy"
    assert compose_item_text(None, "1995", []) == "(1995)"
    assert compose_item_text("Heat", None, ["Crime"], "A heist.") == "Heat Genres: Crime A heist."
    assert compose_item_text(None, None, []) == ""


def test_cap_text_cuts_at_a_word_boundary():
    text = "word " * 300
    capped = cap_text(text.strip(), 100)
    assert len(capped) <= 100 and capped.endswith("word")
    assert cap_text("short", 100) == "short"


def test_duplicates_merge_and_bad_ids_go_to_quarantine():
    items, quarantine = clean_items(raw_items([
        {"item_id": "1", "title": "Heat", "genres": "Crime"},
        {"item_id": " 1 ", "year": "1995", "genres": "Crime|Thriller"},
        {"item_id": "", "title": "No id"},
        {"item_id": "x7", "title": "Text id"},
        {"item_id": "2", "title": "Matrix, The", "year": "1999", "genres": "(no genres listed)"},
    ]))
    assert items.sort("item_id").select("item_id", "item_text", "source_rows").rows() == [
        (1, "Heat (1995) Genres: Crime, Thriller", 2),
        (2, "The Matrix (1999)", 1),
    ]
    assert quarantine.select("source_row", "reason").rows() == [(3, "null_item_id"), (4, "unparseable_item_id")]
    assert int(items["source_rows"].sum()) + quarantine.height == 5


def test_text_ids_are_kept_as_text():
    items, quarantine = clean_items(raw_items([{"item_id": "x7", "title": "Text id"}]), id_type="str")
    assert items["item_id"].to_list() == ["x7"] and quarantine.height == 0


def test_bundled_item_text_follows_the_protocol(bundled_split):
    items, _ = bundled_split
    text = dict(items.select("item_id", "item_text").iter_rows())
    assert text[1] == "Toy Story (1995) Genres: Adventure, Animation, Children, Comedy, Fantasy"
    assert text[3350] == "A Raisin in the Sun (1961) Genres: Drama"
    assert text[143410] == ""               # no title, no year, "(no genres listed)"
    assert text[108583] == "Genres: Comedy"  # no title and no year
    assert items.height == 9066
