"""The protocol on the full bundled data: reference figures and baselines that behave."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recall_pipeline.core.evaluation.baselines import tune
from recall_pipeline.core.evaluation.protocol import build_evaluation_data, evaluate, list_metrics
from recall_pipeline.core.features.rating_matrix import build_rating_matrix


@pytest.fixture(scope="module")
def bundled(bundled_split):
    items, split = bundled_split
    rm = build_rating_matrix(split, items["item_id"].to_numpy())
    data = build_evaluation_data(split, rm, items.sort("item_id")["genres"].to_list())
    return split, rm, data


@pytest.fixture(scope="module")
def report(bundled):
    split, rm, data = bundled
    n_users, n_items = rm.matrix.shape
    no_lists = np.full((n_users, 100), -1)
    no_signal = lambda rows: np.zeros((len(rows), n_items))  # noqa: E731
    return evaluate(split, data, no_lists, final_cold=no_signal, routes={"no_signal": no_signal})


def figures(rows):
    return {(r["model"], r["slice"], r["metric"], r["k"]): r["value"] for r in rows}


def test_slices_match_the_protocol(bundled):
    _, _, data = bundled
    assert len(data.warm.rows) == 653
    assert len(data.sparse.rows) == 195
    assert len(data.cold.rows) == 601 and data.cold.relevant.nnz == 4299
    assert len(data.cold_columns) == 906
    assert data.head.sum() == int(0.2 * 6967)


def test_most_popular_matches_the_reference(report):
    f = figures(report.rows)
    assert f[("MostPopular", "warm", "recall", 50)] == pytest.approx(0.169, abs=0.002)
    assert f[("MostPopular", "warm", "ndcg", 10)] == pytest.approx(0.065, abs=0.002)
    assert f[("MostPopular", "warm", "coverage", 50)] < 0.05          # nearly everyone gets the same items
    assert f[("MostPopular", "warm", "long_tail", 50)] == 0.0
    assert f[("final", "warm", "recall", 50)] == 0.0                  # empty lists hit nothing


def test_collaborative_baselines_beat_popularity_on_warm(report):
    f = figures(report.rows)
    for model in ("EASE", "ItemKNN"):
        assert f[(model, "warm", "recall", 50)] > f[("MostPopular", "warm", "recall", 50)] + 0.05
        assert f[(model, "warm", "coverage", 50)] > f[("MostPopular", "warm", "coverage", 50)]
    assert f[("EASE", "warm", "ndcg", 10)] > f[("MostPopular", "warm", "ndcg", 10)]
    assert set(report.tuning) == {"EASE", "ItemKNN"}
    for name in ("EASE", "ItemKNN"):  # the tuned value is the best of its validation table
        table = report.tuning[name]["validation_recall@50"]
        assert len(table) > 1 and report.tuning[name]["value"] == max(table, key=table.get)
        assert len(set(table.values())) > 1  # the grid matters on this data (else any value is "best")


def test_tuning_picks_the_value_known_to_be_best():
    """Each user's held-out item is item ``user``; the scorer for value v puts it at distance
    |v - 3| from the top of a list ranked by closeness, so 3 ranks it first (Recall@50 = 1),
    values within 24 of 3 keep it in the top 50 and the others lose it (Recall@50 = 0)."""
    n_users, n_items = 40, 400
    fit = sp.csr_matrix((n_users, n_items))
    holdout = sp.csr_matrix((np.ones(n_users), (np.arange(n_users), np.arange(n_users))), shape=(n_users, n_items))

    def make(_fit, value):
        target = np.arange(n_users)[:, None] + (value - 3)
        return lambda rows: -np.abs(np.arange(n_items)[None, :] - target[rows])

    tuned = tune(make, [40.0, 120.0, 3.0, 200.0], fit, holdout)
    assert tuned.value == 3.0
    assert tuned.validation_recall == {40.0: 0.0, 120.0: 0.0, 3.0: 1.0, 200.0: 0.0}
    # equal figures: the first of the grid wins (a stated, deterministic rule)
    assert tune(make, [4.0, 3.0, 2.0], fit, holdout).value == 4.0


def seeded_order_cold_recall(split: pl.DataFrame, seed: int = 0, k: int = 20) -> float:
    """Cold Recall@20 of ranking the cold items by the protocol's seeded random order alone
    (docs/EVALUATION.md: ties broken by ``default_rng(seed).permutation`` ranks), computed here
    from the split without the package's ranking code."""
    cold = np.sort(split.filter(pl.col("part") == "cold_test")["item_id"].unique().to_numpy())
    ranks = np.random.default_rng(seed).permutation(len(cold))
    top = set(cold[np.argsort(ranks)[:k]].tolist())
    relevant = split.filter((pl.col("part") == "cold_test") & pl.col("is_relevant")).select("user_id", "item_id").unique()
    per_user = relevant.group_by("user_id").agg(
        hits=pl.col("item_id").is_in(list(top)).sum(), n=pl.len())
    return float((per_user["hits"] / per_user["n"].clip(upper_bound=k)).mean())


def test_cf_baselines_are_the_seeded_random_order_on_cold_items(bundled, report):
    """A cold item has no training interactions: every CF score ties, so their cold figures are
    those of the seeded order, computed independently; a scorer that knows the answer gets 1."""
    split, rm, data = bundled
    f = figures(report.rows)
    expected = seeded_order_cold_recall(split)
    for model in ("MostPopular", "EASE", "ItemKNN", "route:no_signal"):
        assert f[(model, "cold", "recall", 20)] == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 0.06  # about 20 / 906 of a user's cold items

    relevant = data.cold.relevant
    oracle_rows = {row: i for i, row in enumerate(data.cold.rows)}

    def oracle(rows):  # +1 on each user's relevant cold items
        out = np.zeros((len(rows), len(rm.item_ids)))
        for i, row in enumerate(rows):
            if row in oracle_rows:
                out[i, data.cold_columns[relevant[oracle_rows[row]].indices]] = 1.0
        return out

    no_lists = np.full((len(rm.user_ids), 100), -1)
    knows = figures(evaluate(split, data, no_lists, final_cold=oracle, with_baselines=False).rows)
    assert knows[("final", "cold", "recall", 20)] == pytest.approx(1.0)
    assert knows[("final", "cold", "ndcg", 20)] == pytest.approx(1.0)


def test_perfect_lists_score_one(bundled):
    _, rm, data = bundled
    lists = np.full((len(data.warm.rows), 100), -1)
    for position in range(len(data.warm.rows)):
        relevant = data.warm.relevant[position].indices[:100]
        lists[position, :len(relevant)] = relevant
    f = figures(list_metrics("perfect", data, lists, None))
    assert f[("perfect", "warm", "recall", 20)] == pytest.approx(1.0)
    assert f[("perfect", "warm", "ndcg", 10)] == pytest.approx(1.0)
    assert f[("perfect", "sparse", "recall", 50)] == pytest.approx(1.0)


def test_slices_above_the_cell_cap_are_seeded_samples_of_their_users(bundled_split):
    """At scale each slice is scored on a seeded sample of its users (users x items ranked
    bounded); the bundled data stays whole under the default cap, and the rows say which."""
    from recall_pipeline.core.evaluation.protocol import MAX_EVALUATION_CELLS, USERS_SLICE

    items, split = bundled_split
    rm = build_rating_matrix(split, items["item_id"].to_numpy())
    whole = build_evaluation_data(split, rm)
    assert build_evaluation_data(split, rm, max_cells=MAX_EVALUATION_CELLS).warm.rows.tolist() == whole.warm.rows.tolist()
    n_items = len(rm.item_ids)
    capped = build_evaluation_data(split, rm, max_cells=50 * n_items + n_items - 1, seed=3)
    assert len(capped.warm.rows) == 50 and set(capped.warm.rows) < set(whole.warm.rows)
    assert np.all(np.diff(capped.warm.rows) > 0)                      # still in row order
    position = np.searchsorted(whole.warm.rows, capped.warm.rows)
    assert (capped.warm.relevant != whole.warm.relevant[position]).nnz == 0   # each keeps its items
    assert capped.sparse_mask.tolist() == whole.sparse_mask[position].tolist()
    # the cold slice is capped in the cold items' cells: its users rank those alone
    n_cold = len(whole.cold_columns)
    assert len(capped.cold.rows) == (50 * n_items + n_items - 1) // n_cold < len(whole.cold.rows)
    assert len(capped.cold.rows) > 50 and set(capped.cold.rows) <= set(whole.cold.rows)
    cold_fits = build_evaluation_data(split, rm, max_cells=601 * n_cold)
    assert len(cold_fits.cold.rows) == 601 and len(cold_fits.warm.rows) == 601 * n_cold // n_items
    counts = {r["metric"]: r["value"] for r in capped.sample_rows()}
    assert {r["slice"] for r in capped.sample_rows()} == {USERS_SLICE}
    assert counts == {"warm_scored": 50, "warm_in_slice": 653, "sparse_scored": capped.sparse_mask.sum(),
                      "sparse_in_slice": 195, "cold_scored": len(capped.cold.rows), "cold_in_slice": 601}
    assert {r["metric"]: r["value"] for r in whole.sample_rows()} == {
        "warm_scored": 653, "warm_in_slice": 653, "sparse_scored": 195, "sparse_in_slice": 195,
        "cold_scored": 601, "cold_in_slice": 601}
    assert capped.sample_notes() == ["warm slice scored on a seeded sample of 50 of its 653 users",
                                     f"sparse slice scored on a seeded sample of {capped.sparse_mask.sum()} of its 195 users",
                                     f"cold slice scored on a seeded sample of {len(capped.cold.rows)} of its 601 users"]
    assert whole.sample_notes() == []
    # seeded: the same sample again; another seed, another sample
    again = build_evaluation_data(split, rm, max_cells=50 * n_items, seed=3)
    assert again.warm.rows.tolist() == capped.warm.rows.tolist()
    assert build_evaluation_data(split, rm, max_cells=50 * n_items, seed=4).warm.rows.tolist() != again.warm.rows.tolist()
    assert len(build_evaluation_data(split, rm, max_cells=1).warm.rows) == 1   # never an empty slice


def test_item_knn_baseline_is_refit_keeping_only_the_count_that_won(monkeypatch, bundled):
    """Above the dense size ItemKNN is tuned on one similarity ranked to the grid's largest
    count, then refit on all of training ranked only to the count that won (at L the refit kept
    400 neighbours of 715,121 items where 20 won). The refit's lists are those of an ItemKNN
    built for that count alone. The tuning's choice is pinned to the smaller count here: what
    wins is the tuning's business, tested elsewhere."""
    from dataclasses import replace

    from recall_pipeline.core.evaluation import baselines
    from recall_pipeline.core.evaluation.protocol import run_baselines, scorer_lists

    split, rm, data = bundled
    monkeypatch.setattr(baselines, "KNN_MAX_DENSE_BYTES", 0)  # the sparse path, as at M and L
    ranked_to = []
    ranked = baselines._ranked_sparse_cosine
    monkeypatch.setattr(baselines, "_ranked_sparse_cosine", lambda xa, keep: ranked_to.append(keep) or ranked(xa, keep))
    tune = baselines.tune
    monkeypatch.setattr(baselines, "tune", lambda make, grid, *a, **k: replace(tune(make, grid, *a, **k), value=min(grid)))
    knn = next(r for r in run_baselines(split, data, ease_grid=(200.0,), knn_grid=(5, 50)) if r.name == "ItemKNN")
    assert knn.tuned.value == 5 and ranked_to == [50, 5]
    assert np.array_equal(knn.warm_lists, scorer_lists(baselines.item_knn(rm.matrix, 5), data)[0])


def test_final_is_compared_with_every_model_on_the_same_users(report):
    """Report.comparisons: final against each route and baseline, on warm Recall@50, warm
    NDCG@10 and cold Recall@20; the gain is the difference of the two metric rows (the same
    users), its 95% interval around it. final lists nothing here, so every warm gain is minus
    the other model's figure and beyond the noise; on the cold slice final and the no-signal
    route rank alike (the same seeded order of zeros): gain 0, interval [0, 0]."""
    f = figures(report.rows)
    rows = report.comparisons()
    assert {r["against"] for r in rows} == {"route:no_signal", "MostPopular", "ItemKNN", "EASE"}
    assert {(r["slice"], r["metric"], r["k"]) for r in rows} == {("warm", "recall", 50), ("warm", "ndcg", 10),
                                                                 ("cold", "recall", 20)}
    for r in rows:
        key = (r["slice"], r["metric"], r["k"])
        assert r["gain"] == pytest.approx(f[("final", *key)] - f[(r["against"], *key)], abs=1e-12)
        assert r["lower"] <= r["gain"] <= r["upper"] and r["users"] == (653 if r["slice"] == "warm" else 601)
    by = {(r["against"], r["slice"], r["metric"]): r for r in rows}
    ease = by[("EASE", "warm", "recall")]
    assert ease["upper"] < 0 and ease["gain"] < -0.1
    assert (by[("route:no_signal", "cold", "recall")]["lower"], by[("route:no_signal", "cold", "recall")]["upper"]) == (0, 0)
