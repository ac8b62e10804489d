"""The split reproduces docs/EVALUATION.md's check table exactly."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from recall_pipeline.core.features.split import (
    SplitProtocol, cold_items, item_sides, split_interactions, split_keeping_sides, split_summary,
)


def test_bundled_split_counts(bundled_split):
    _, split = bundled_split
    assert split_summary(split) == {
        "cold_items": 906,
        "cold_interactions": 8_750,
        "train_interactions": 72_737,
        "train_users": 671,
        "train_items": 6_967,
        "warm_test_interactions": 18_517,
        "warm_test_relevant": 8_791,
        "warm_slice_users": 653,
        "sparse_slice_users": 195,
        "cold_slice_users": 601,
        "cold_relevant": 4_299,
        "validation_fit": 57_915,
        "validation_holdout": 14_822,
    }


def test_bundled_cold_items_first_ten(bundled_split):
    _, split = bundled_split
    cold = cold_items(split["item_id"].to_numpy(), SplitProtocol())
    assert sorted(cold.tolist())[:10] == [2, 13, 38, 53, 57, 69, 86, 88, 93, 99]


def test_last_ceil_fifth_per_user_by_time_then_item():
    t0 = datetime(2020, 1, 1)
    # user 1: 6 interactions -> ceil(1.2) = 2 test; two share the last timestamp (item order decides)
    rows = [(1, item, 4.0, t0 + timedelta(days=day)) for item, day in
            [(5, 0), (4, 1), (3, 2), (9, 3), (8, 4), (7, 4)]]
    rows += [(2, 6, 2.0, t0)]  # user 2: 1 interaction -> ceil(0.2) = 1 test, nothing to train
    clean = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    split = split_interactions(clean, SplitProtocol(cold_fraction=0.0))
    tests = split.filter(pl.col("part") == "warm_test").select("user_id", "item_id").rows()
    assert tests == [(1, 7), (1, 8), (2, 6)]
    train = split.filter(pl.col("part") == "train")
    # validation: 4 training interactions -> ceil(0.8) = 1 holdout, the latest
    assert train.filter(pl.col("val_part") == "holdout")["item_id"].to_list() == [9]
    assert split.filter(pl.col("user_id") == 2)["is_relevant"].to_list() == [False]


def test_cold_items_leave_training_entirely():
    t0 = datetime(2020, 1, 1)
    rows = [(u, i, 5.0, t0 + timedelta(hours=i)) for u in range(3) for i in range(20)]
    clean = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    split = split_interactions(clean)
    cold = set(cold_items(np.arange(20), SplitProtocol()).tolist())
    assert len(cold) == 2
    assert set(split.filter(pl.col("part") == "cold_test")["item_id"].to_list()) == cold
    assert not set(split.filter(pl.col("part") != "cold_test")["item_id"].to_list()) & cold


def test_cold_set_stays_when_items_are_added(bundled_split):
    """The asset's path (catalogue + interactions, sides stored) reproduces the protocol's cold
    set; adding items later moves no existing item between cold and warm, and the new items
    are split by the seeded hash at about the cold fraction."""
    items, split = bundled_split
    clean = split.select("user_id", "item_id", "rating", "timestamp")
    first, sides = split_keeping_sides(clean, items["item_id"])
    assert split_summary(first) == split_summary(split)
    cold = sides.filter("is_cold")["item_id"].sort().to_list()
    assert len(cold) == 906 and cold[:10] == [2, 13, 38, 53, 57, 69, 86, 88, 93, 99]
    assert set(sides["rule"]) == {"permutation"}

    rng = np.random.default_rng(1)
    new_items = np.arange(200_001, 202_001)  # 2,000 items added to the catalogue, each rated
    later = datetime(2017, 1, 1)
    added = pl.DataFrame({"user_id": rng.choice(clean["user_id"].unique().to_numpy(), len(new_items)),
                          "item_id": new_items, "rating": 4.0,
                          "timestamp": [later + timedelta(minutes=int(m)) for m in range(len(new_items))]})
    grown = pl.concat([clean, added.cast(clean.schema)])
    catalogue = pl.concat([items["item_id"], pl.Series(new_items)])
    second, sides_after = split_keeping_sides(grown, catalogue, previous=sides)

    kept = sides.join(sides_after, on="item_id", suffix="_after")
    assert kept.height == sides.height and (kept["is_cold"] == kept["is_cold_after"]).all()
    cold_after = set(second.filter(pl.col("part") == "cold_test")["item_id"].to_list())
    assert cold_after & set(items["item_id"].to_list()) == set(cold)
    placed = sides_after.filter(pl.col("item_id").is_in(new_items.tolist()))
    assert set(placed["rule"]) == {"hash"} and placed.height == len(new_items)
    assert 0.08 < placed["is_cold"].mean() < 0.12
    # the protocol's rule 1 alone, rerun on the grown item set, would have reshuffled C
    rerun = set(cold_items(catalogue.to_numpy(), SplitProtocol()).tolist())
    assert rerun & set(items["item_id"].to_list()) != set(cold)
    # and the assignment of a new item does not depend on which other items came with it
    alone = item_sides(pl.concat([items["item_id"], pl.Series(new_items[:5])]), previous=sides)
    assert (alone.filter(pl.col("item_id").is_in(new_items[:5].tolist()))["is_cold"].to_list()
            == placed["is_cold"][:5].to_list())


def test_item_sides_start_over_under_another_protocol_or_data_set():
    ids = pl.Series(range(1, 101))
    before = item_sides(ids)
    other_seed = item_sides(pl.Series(range(1, 121)), SplitProtocol(seed=5), previous=before)
    assert set(other_seed["rule"]) == {"permutation"} and other_seed["is_cold"].sum() == 12
    other_data = item_sides(pl.Series(range(1000, 1100)), previous=before)
    assert set(other_data["rule"]) == {"permutation"} and other_data.height == 100
    grown = item_sides(pl.Series(range(1, 121)), previous=before)
    assert grown.filter(pl.col("item_id") <= 100).equals(before)


def test_pseudo_cold_split_is_made_of_training_rows_alone(bundled_split):
    """Rule 4: a seeded 10% of the training items (never items of C) held out as pseudo-cold,
    the rest cut by rule 2; the test parts play no part."""
    from recall_pipeline.core.features.split import pseudo_cold_split

    _, split = bundled_split
    pseudo = pseudo_cold_split(split)
    summary = split_summary(pseudo)
    assert summary["cold_items"] == int(0.1 * 6_967)
    assert pseudo.height == 72_737 and set(pseudo["part"]) == {"train", "warm_test", "cold_test"}
    cold = set(split.filter(pl.col("part") == "cold_test")["item_id"].to_list())
    assert not set(pseudo.filter(pl.col("part") == "cold_test")["item_id"].to_list()) & cold
    # rule 1 done here by hand on the distinct training item ids: sorted, shuffled by the seeded
    # permutation, the first int(0.1 * n)
    train_items = np.sort(split.filter(pl.col("part") == "train")["item_id"].unique().to_numpy())
    by_hand = set(np.random.default_rng(0).permutation(train_items)[:int(0.1 * len(train_items))].tolist())
    assert set(pseudo.filter(pl.col("part") == "cold_test")["item_id"].to_list()) == by_hand
    # the test parts play no part: other items and ratings in them change nothing
    rewritten = split.with_columns(
        item_id=pl.when(pl.col("part") == "train").then(pl.col("item_id")).otherwise(pl.col("item_id") + 1_000_000),
        rating=pl.when(pl.col("part") == "train").then(pl.col("rating")).otherwise(6.0 - pl.col("rating")))
    assert pseudo_cold_split(rewritten).equals(pseudo)
    # a pseudo-cold item leaves every other part
    pseudo_items = set(pseudo.filter(pl.col("part") == "cold_test")["item_id"].to_list())
    assert not set(pseudo.filter(pl.col("part") != "cold_test")["item_id"].to_list()) & pseudo_items
