"""Top-K lists: exclusion of training items, padding, seeded tie-breaking."""

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.index import build_exact_index
from recall_pipeline.core.ranking import search_top_k, tie_order, top_k_dense


def test_dense_top_k_excludes_and_pads():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0]]))
    items, top = top_k_dense(scores, 5, exclude)
    assert items.tolist() == [[2, 3, 0, -1, -1]]
    assert np.isneginf(top[0, 3:]).all()


def test_dense_ties_follow_the_seeded_order_not_the_id():
    scores = np.zeros((1, 30))
    items, _ = top_k_dense(scores, 30, seed=3)
    assert items[0].tolist() == np.argsort(tie_order(30, seed=3)).tolist()
    assert items[0].tolist() != list(range(30))


def test_search_excludes_each_users_own_items():
    vectors = np.eye(6, dtype=np.float32)
    index = build_exact_index(vectors)
    queries = np.array([[1, 0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.6, 0.7, 0.8, 0.9, 1]], dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]))  # user 1 saw items 0-3
    items, scores = search_top_k(index, queries, exclude, np.array([0, 1]), k=3)
    assert items.tolist() == [[0, 1, 2], [5, 4, -1]]
    assert np.isneginf(scores[1, 2])
