"""The protocol on the bundled data: MostPopular matches shared/EVALUATION.md's reference."""

import numpy as np
import pytest

from recall_pipeline.core.evaluation import evaluate_recall, warm_slice
from recall_pipeline.core.matrix import build_rating_matrix


@pytest.fixture(scope="module")
def bundled_matrix(bundled_split):
    items, split = bundled_split
    return split, build_rating_matrix(split, items["item_id"].to_numpy())


def figures(rows):
    return {(r["model"], r["slice"], r["metric"], r["k"]): r["value"] for r in rows}


def test_most_popular_matches_the_reference(bundled_matrix):
    split, rm = bundled_matrix
    n_users, n_items = rm.matrix.shape
    no_lists = np.full((n_users, 100), -1)
    rows = figures(evaluate_recall(split, rm, no_lists, np.zeros((n_users, 4)), np.zeros((n_items, 4))))
    assert rows[("MostPopular", "warm", "recall", 50)] == pytest.approx(0.169, abs=0.002)
    assert rows[("MostPopular", "warm", "ndcg", 10)] == pytest.approx(0.065, abs=0.002)
    assert rows[("final", "warm", "recall", 50)] == 0.0  # empty lists hit nothing
    # all cold popularity scores tie at 0: a random order of 906 items, 20 of them shown
    assert rows[("MostPopular", "cold", "recall", 20)] < 0.06


def test_perfect_lists_score_one(bundled_matrix):
    split, rm = bundled_matrix
    warm = warm_slice(split, rm)
    assert len(warm.rows) == 653
    lists = np.full((rm.matrix.shape[0], 100), -1)
    for position, row in enumerate(warm.rows):
        items = warm.relevant[position].indices[:100]
        lists[row, :len(items)] = items
    rows = figures(evaluate_recall(split, rm, lists, np.zeros((rm.matrix.shape[0], 4)),
                                   np.zeros((rm.matrix.shape[1], 4))))
    assert rows[("final", "warm", "recall", 20)] == pytest.approx(1.0)
    assert rows[("final", "warm", "ndcg", 10)] == pytest.approx(1.0)
