"""The protocol on the full bundled data: reference figures and baselines that behave."""

import numpy as np
import pytest

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
    assert report.tuning["EASE"]["value"] in report.tuning["EASE"]["validation_recall@50"]


def test_cf_baselines_are_a_random_order_on_cold_items(report):
    # a cold item has no training interactions: every CF score ties, the seeded order decides
    f = figures(report.rows)
    random_order = f[("MostPopular", "cold", "recall", 20)]
    assert f[("route:no_signal", "cold", "recall", 20)] == random_order
    assert f[("EASE", "cold", "recall", 20)] == random_order
    assert f[("ItemKNN", "cold", "recall", 20)] == random_order
    assert random_order < 0.06  # about 20 / 906 of a user's cold items, and ties with few relevant


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
