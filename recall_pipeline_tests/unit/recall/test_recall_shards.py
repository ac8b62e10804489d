"""``recall_candidates`` in shards: exported, computed shard by shard, merged, equal to one pass."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.recall import recall_shards
from recall_pipeline.core.recall.index import build_exact_index
from recall_pipeline.core.recall.recall_candidates import (
    BYTES_PER_LIST_SLOT, RecallInputs, block_users, candidates_table, recall,
)
from recall_pipeline.core.recall.routes import ROUTES, ModelRoute, RouteSettings
from recall_pipeline.core.shards import ShardStore


def world(n_users: int = 60, n_items: int = 300, dims: int = 16, seed: int = 0) -> RecallInputs:
    """Random users (a few without history) over a random catalogue, every route with input."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users - 5):  # the last 5 users have no training history
        for item in rng.choice(n_items, size=int(rng.integers(3, 30)), replace=False):
            rows.append((user, int(item), float(rng.integers(1, 6)), datetime(2020, 1, 1) + timedelta(days=int(item)), "train"))
    rows += [(user, 0, 4.0, datetime(2021, 1, 1), "warm_test") for user in range(n_users - 5, n_users)]
    split = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")
    rm = build_rating_matrix(split, np.arange(n_items))
    vectors = rng.normal(size=(n_items, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with_history = np.flatnonzero(np.diff(rm.matrix.indptr) > 0)
    profiles = pl.DataFrame({"user_id": rm.user_ids[with_history]}).with_columns(
        pl.Series("embedding", rng.normal(size=(len(with_history), dims)).astype(np.float32)))
    owners = np.repeat(rm.user_ids[with_history], 2)
    model_vectors = rng.normal(size=(n_items, 8)).astype(np.float32)
    return RecallInputs(
        item_ids=rm.item_ids, item_vectors=vectors, encoder="test-encoder", lm_index=build_exact_index(vectors),
        lm_index_type="flat", rm=rm, profiles=profiles, interest_owners=owners,
        interests=rng.normal(size=(len(owners), dims)).astype(np.float32),
        model_route=ModelRoute(build_exact_index(model_vectors), with_history,
                               rng.normal(size=(len(with_history), 8)).astype(np.float32)),
        model_key="recall_two_tower/v1", item_counts=rm.item_counts())


@pytest.mark.parametrize("every_route", [False, True])
def test_three_shards_write_exactly_the_rows_of_one_pass(tmp_path, every_route):
    settings = RouteSettings(depth=40, mmr_lambda=0.7, popularity_discount=0.2, compute_zero_weight_routes=every_route)
    inputs, k = world(), 20
    whole = candidates_table(inputs, recall(inputs, settings, k), "run-1")

    store = ShardStore(str(tmp_path), "recall_candidates")
    per_shard = recall_shards.export_inputs(store, "run-1", inputs, recall_shards.all_user_rows(inputs), 3)
    assert per_shard["users"].sum() == len(inputs.rm.user_ids) and per_shard.height == 3
    # blocks of 7 users or fewer: every shard writes several parts
    # the routes computed: all six with the interest vectors, or the four that vote by default
    lists = len(ROUTES) + len(inputs.interest_owners) / len(inputs.rm.user_ids) if every_route else 4
    budget = int(7.5 * settings.depth * lists * BYTES_PER_LIST_SLOT)
    assert block_users(inputs, settings, budget) == 7
    out = {shard: recall_shards.compute_shard(store, "run-1", shard, settings, k, budget) for shard in range(3)}
    assert sorted(o.users for o in out.values()) == sorted(per_shard["users"].to_list()) and min(o.users for o in out.values()) > 0
    assert all(o.parts == -(-o.users // 7) for o in out.values())
    merged = pl.concat(recall_shards.candidate_parts(store, "run-1", {shard: o.parts for shard, o in out.items()})
                       ).sort("user_id", "rank")

    assert merged.drop("created_at").equals(whole.drop("created_at"))
    assert merged["user_id"].n_unique() == len(inputs.rm.user_ids)
    assert set(merged["route"]) >= {"popularity", "two_tower"}  # newcomers and model users both present
    assert merged["rank_lm_interest"].is_not_null().any() == every_route
    assert recall_shards.exported_meta(store, "run-1")["model_key"] == "recall_two_tower/v1"


def test_a_shard_reads_back_what_the_plan_exported(tmp_path):
    inputs = world(n_users=12, n_items=50)
    store = ShardStore(str(tmp_path), "recall_candidates")
    per_shard = recall_shards.export_inputs(store, "r", inputs, np.array([0, 3, 5]), 8)
    back = recall_shards.load_inputs(store, "r")
    assert (back.rm.matrix != inputs.rm.matrix).nnz == 0
    assert np.array_equal(back.rm.user_ids, inputs.rm.user_ids) and np.array_equal(back.item_ids, inputs.item_ids)
    assert np.array_equal(back.item_vectors, inputs.item_vectors)
    assert back.profiles.equals(inputs.profiles) and np.array_equal(back.interests, inputs.interests)
    assert np.array_equal(back.model_route.rows, inputs.model_route.rows)
    assert np.array_equal(back.model_route.user_vectors, inputs.model_route.user_vectors)
    assert back.lm_index.ntotal == inputs.lm_index.ntotal == 50
    assert store.read("r", recall_shards.SHARD_USERS)["user_id"].sort().to_list() == inputs.rm.user_ids[[0, 3, 5]].tolist()
    assert np.array_equal(back.item_counts, inputs.item_counts)
    # 3 users in 8 shards: a shard without users writes no rows and says so
    empty = sorted(set(range(8)) - set(per_shard["shard"]))[0]
    assert recall_shards.compute_shard(store, "r", empty, RouteSettings(depth=10), 5) == recall_shards.ShardOutput(0, 1)
    assert store.read("r", recall_shards.part_name(empty, 0)).is_empty()


def test_shards_score_with_the_exported_ease_model(tmp_path):
    """A feedback refresh exports the stored EASE model: every shard scores with it, not a refit."""
    from recall_pipeline.core.evaluation.baselines import fit_ease

    inputs, settings, k = world(seed=3), RouteSettings(depth=30), 15
    _, model = fit_ease(inputs.rm.matrix, 50.0)  # another lambda than the settings': a refit would differ
    whole = candidates_table(inputs, recall(inputs, settings, k, ease=model), "run-2")
    refit = candidates_table(inputs, recall(inputs, settings, k), "run-2")
    store = ShardStore(str(tmp_path), "recall_candidates")
    recall_shards.export_inputs(store, "run-2", inputs, recall_shards.all_user_rows(inputs), 2, model)
    out = {shard: recall_shards.compute_shard(store, "run-2", shard, settings, k) for shard in range(2)}
    merged = pl.concat(recall_shards.candidate_parts(store, "run-2", {shard: o.parts for shard, o in out.items()})
                       ).sort("user_id", "rank")
    assert merged.drop("created_at").equals(whole.drop("created_at"))
    assert not merged.drop("created_at").equals(refit.drop("created_at"))


@pytest.mark.parametrize("trust", [0.0, 0.25])
def test_the_serving_version_s_trust_scales_the_two_tower_weight_in_every_recall(tmp_path, trust):
    """What the trust factor saved with a model version does (core.training.route_trust): the
    lists are those of the two-tower weight times the trust, in one pass and in shards."""
    inputs, k = world(), 20
    settings = RouteSettings(depth=40)
    trusted = dataclasses.replace(inputs, two_tower_trust=trust)
    scaled = RouteSettings(depth=40, weights=dict(settings.weights, two_tower=settings.weights["two_tower"] * trust))
    expected = candidates_table(inputs, recall(inputs, scaled, k), "run-1")
    assert not expected.equals(candidates_table(inputs, recall(inputs, settings, k), "run-1"))
    assert candidates_table(trusted, recall(trusted, settings, k), "run-1").drop("created_at").equals(
        expected.drop("created_at"))
    store = ShardStore(str(tmp_path), "recall_candidates")
    recall_shards.export_inputs(store, "run-1", trusted, recall_shards.all_user_rows(trusted), 2)
    assert recall_shards.load_inputs(store, "run-1").two_tower_trust == trust
    out = {shard: recall_shards.compute_shard(store, "run-1", shard, settings, k) for shard in range(2)}
    merged = pl.concat(recall_shards.candidate_parts(store, "run-1", {s: o.parts for s, o in out.items()})
                       ).sort("user_id", "rank")
    assert merged.drop("created_at").equals(expected.drop("created_at"))
    assert merged["rank_two_tower"].is_null().all() == (trust == 0.0)  # weight 0: not computed
