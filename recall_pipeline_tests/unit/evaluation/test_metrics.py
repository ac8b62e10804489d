"""Metrics against hand-computed values: ties, fewer relevant items than K, empty lists."""

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import hit_matrix, ndcg_at_k, recall_at_k, relevant_counts


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


def test_coverage_long_tail_and_novelty_by_hand():
    from recall_pipeline.core.evaluation.metrics import catalogue_coverage, head_items, long_tail_share, novelty

    lists = np.array([[0, 1, 2], [0, 3, -1]])
    assert catalogue_coverage(lists, 3, n_catalogue=10) == pytest.approx(4 / 10)
    assert catalogue_coverage(lists, 1, n_catalogue=10) == pytest.approx(1 / 10)
    counts = np.array([9.0, 5.0, 5.0, 1.0, 0.0])
    # 4 items have interactions -> head = int(0.2 * 4) = 0 items; with share 0.5 -> 2 items:
    # item 0 (9), then items 1 and 2 tie at 5 and the smaller id wins
    assert head_items(counts, np.array([10, 30, 20, 40, 50]), share=0.5).tolist() == [True, False, True, False, False]
    head = np.array([True, True, False, False, False])
    assert long_tail_share(lists, 3, head).tolist() == pytest.approx([1 / 3, 1 / 2])
    per_user = novelty(lists, 3, counts, n_users=9)
    info = -np.log2((counts + 1) / 10)
    assert per_user.tolist() == pytest.approx([info[[0, 1, 2]].mean(), info[[0, 3]].mean()])


def test_genre_diversity_by_hand():
    from recall_pipeline.core.evaluation.metrics import intra_list_diversity

    genres = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]]))
    lists = np.array([[0, 1, 2, 3], [0, 1, -1, -1], [2, -1, -1, -1]])
    # pairs of user 0: (0,1) 1-1/2, (0,2) 1, (0,3) 1, (1,2) 1, (1,3) 1, (2,3) two empty sets 0
    assert intra_list_diversity(lists, 4, genres).tolist() == pytest.approx([4.5 / 6, 0.5, 0.0])
    assert intra_list_diversity(lists, 2, genres).tolist() == pytest.approx([0.5, 0.5, 0.0])
    vectors = np.eye(4)
    assert intra_list_diversity(lists[:1], 4, vectors=vectors).tolist() == pytest.approx([1.0])


def test_paired_interval_is_the_bootstrap_of_the_per_user_differences():
    """The gain is the mean difference; a constant difference has no spread; the interval is
    the central 95% of the resampled means, which a wider spread widens; the resamples drawn a
    chunk at a time are those of one draw (the warm choice's guard keeps its figures)."""
    from recall_pipeline.core.evaluation.metrics import bootstrap_means, paired_interval

    rng = np.random.default_rng(1)
    a = rng.random(400)
    assert paired_interval(a + 0.25, a) == pytest.approx((0.25, 0.25, 0.25))
    noise = rng.normal(0, 0.1, 400)
    gain, lower, upper = paired_interval(a + 0.05 + noise, a)
    assert gain == pytest.approx(0.05 + noise.mean()) and lower < gain < upper
    assert upper - lower == pytest.approx(2 * 1.96 * noise.std() / 20, rel=0.15)  # the normal interval, about
    _, wide_lower, wide_upper = paired_interval(a + 0.05 + 3 * noise, a)
    assert wide_upper - wide_lower > 2.5 * (upper - lower)
    one_draw = a[np.random.default_rng(0).integers(0, 400, (1000, 400))].mean(axis=1)
    np.testing.assert_array_equal(bootstrap_means(a, 1000, 0, chunk=70), one_draw)
    assert paired_interval(np.zeros(0), np.zeros(0)) == (0.0, 0.0, 0.0)
