"""Metrics against hand-computed values: ties, fewer relevant items than K, empty lists."""

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.metrics import hit_matrix, ndcg_at_k, recall_at_k, relevant_counts


def relevant(rows, n_items=10):
    matrix = np.zeros((len(rows), n_items))
    for user, items in enumerate(rows):
        matrix[user, items] = 1
    return sp.csr_matrix(matrix)


def test_recall_and_ndcg_by_hand():
    lists = np.array([[3, 1, 7, 0], [5, 6, -1, -1], [-1, -1, -1, -1]])
    rel = relevant([[1, 0], [9], [2, 3, 4, 5, 6]])
    hits = hit_matrix(lists, rel)
    assert hits.tolist() == [[False, True, False, True], [False, False, False, False], [False] * 4]
    n = relevant_counts(rel)
    # user 0: 2 relevant, both in the top 4; user 1: none; user 2: empty list
    assert recall_at_k(hits, n, 4).tolist() == [1.0, 0.0, 0.0]
    assert recall_at_k(hits, n, 2).tolist() == [0.5, 0.0, 0.0]
    # capped recall: user 2 has 5 relevant, K=2 -> denominator 2
    lists2 = np.array([[2, 3]])
    assert recall_at_k(hit_matrix(lists2, relevant([[2, 3, 4, 5, 6]])), np.array([5]), 2).tolist() == [1.0]
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(hits, n, 4)[0] == pytest.approx(dcg / ideal)
    assert ndcg_at_k(hits, n, 1)[0] == 0.0


def test_ndcg_is_one_for_a_perfect_list_shorter_than_k():
    hits = hit_matrix(np.array([[4, -1, -1]]), relevant([[4]]))
    assert ndcg_at_k(hits, np.array([1]), 3)[0] == pytest.approx(1.0)
    assert recall_at_k(hits, np.array([1]), 3)[0] == 1.0
