"""Incremental item embeddings: only new or changed texts are encoded."""

from dataclasses import dataclass

import numpy as np
import polars as pl

from recall_pipeline.core.features.item_embeddings import as_matrix, assemble, encode_texts, plan_refresh

ITEMS = pl.DataFrame({"item_id": [3, 1, 2],
                      "item_text": ["Heat (1995) Genres: Crime", "Alien (1979) Genres: Horror",
                                    "Up (2009) Genres: Animation"]})


class CountingEncoder:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder):
        self.encoder, self.texts = encoder, []

    @property
    def identity(self):
        return self.encoder.identity

    def encode(self, texts, progress=False):
        self.texts.extend(texts)
        return self.encoder.encode(texts)


@dataclass(frozen=True)
class Refresh:
    table: pl.DataFrame
    encoded: int
    reused: int


def refresh_item_embeddings(items: pl.DataFrame, encoder, previous: pl.DataFrame | None, shards: int = 2) -> Refresh:
    """What the item_embeddings asset does with these functions: plan, encode the texts to
    encode in ``shards`` parts, assemble the parts with the reused rows."""
    plan = plan_refresh(items, encoder.identity.key(), previous)
    parts = [encode_texts(plan.todo.gather_every(shards, offset), encoder)[0] for offset in range(shards)]
    return Refresh(assemble(parts, plan.reused), plan.todo.height, plan.reused.height)


def test_second_refresh_with_one_changed_item_encodes_exactly_one(encoder):
    counting = CountingEncoder(encoder)
    first = refresh_item_embeddings(ITEMS, counting, None)
    assert (first.encoded, first.reused) == (3, 0)
    assert first.table["item_id"].to_list() == [1, 2, 3]

    changed = ITEMS.with_columns(
        pl.when(pl.col("item_id") == 2).then(pl.lit("Up (2009) Genres: Adventure"))
        .otherwise(pl.col("item_text")).alias("item_text"))
    counting.texts.clear()
    second = refresh_item_embeddings(changed, counting, first.table)
    assert (second.encoded, second.reused) == (1, 2)
    assert counting.texts == ["Up (2009) Genres: Adventure"]
    ids, vectors = as_matrix(second.table)
    _, before = as_matrix(first.table)
    assert ids.tolist() == [1, 2, 3]
    assert np.allclose(vectors[[0, 2]], before[[0, 2]])   # reused untouched
    assert float(vectors[1] @ encoder.encode(["Up (2009) Genres: Adventure"])[0]) > 0.9999


def test_a_different_model_reencodes_everything(encoder):
    first = refresh_item_embeddings(ITEMS, encoder, None)
    other = first.table.with_columns(pl.lit("another-model@0").alias("model"))
    again = refresh_item_embeddings(ITEMS, encoder, other)
    assert (again.encoded, again.reused) == (3, 0)


def test_an_unchanged_catalogue_calls_no_encoder(encoder):
    first = refresh_item_embeddings(ITEMS, encoder, None)

    class Refusing:
        identity = encoder.identity

        def encode(self, texts, progress=False):
            raise AssertionError(f"asked to encode {texts}")

    again = refresh_item_embeddings(ITEMS, Refusing(), first.table)
    assert (again.encoded, again.reused) == (0, 3)
    assert again.table.equals(first.table)
