"""The cold slice scores the cold items alone: each scorer's scores of some columns equal its
full scores of those columns, and the cold lists are the ones ranked from the full scores."""

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.evaluation import baselines
from recall_pipeline.core.evaluation.evaluation_report import only_proposed
from recall_pipeline.core.evaluation.protocol import COLD_K, cold_top_k
from recall_pipeline.core.features.user_profiles import profile_scorer
from recall_pipeline.core.recall.routes import interest_scorer
from recall_pipeline.core.scoring import on_columns
from recall_pipeline.core.training.text_cf import TextCF

RNG = np.random.default_rng(7)
N_USERS, N_ITEMS, DIM = 40, 300, 16
ITEMS = RNG.normal(size=(N_ITEMS, DIM)).astype(np.float32)
COLUMNS = np.sort(RNG.choice(N_ITEMS, 60, replace=False))
ROWS = np.arange(N_USERS)


def scorers() -> dict:
    users = RNG.normal(size=(N_USERS, DIM)).astype(np.float32)
    owners = np.repeat(np.arange(0, N_USERS, 2), 3)   # every other user, three interests each
    interests = RNG.normal(size=(len(owners), DIM)).astype(np.float32)
    train = sp.random(N_USERS, N_ITEMS, density=0.05, format="csr", random_state=3)
    text_cf = TextCF(np.eye(DIM, dtype=np.float32) * 0.5, lam=1.0, alpha=0.0)
    profile = profile_scorer(users, ITEMS)
    # the baselines too: some items without a training interaction, as the cold items are
    binary = sp.csr_matrix(train @ sp.diags((np.arange(N_ITEMS) % 4 > 0).astype(float)))
    binary.eliminate_zeros()
    return {"lm_profile": profile, "lm_interest": interest_scorer(N_USERS, owners, interests, ITEMS),
            "text_cf": text_cf.scorer(train, ITEMS),
            "text_cf as the route serves it": only_proposed(profile, RNG.random(N_ITEMS) < 0.5),
            "MostPopular": baselines.most_popular(binary),
            "ItemKNN, dense similarity": baselines.ItemKNN(binary).scorer(20),
            "ItemKNN, sparse similarity": baselines.ItemKNN(binary, max_dense_bytes=0).scorer(20),
            "ItemKNN over the most-interacted items": baselines.ItemKNN(binary, max_items=100).scorer(20)}


def test_each_scorer_scores_some_columns_as_its_full_scores_of_them():
    for name, scorer in scorers().items():
        narrow = on_columns(scorer, COLUMNS)
        assert narrow is not None and getattr(scorer, "on_columns", None) is not None, name
        np.testing.assert_allclose(narrow(ROWS), scorer(ROWS)[:, COLUMNS], rtol=1e-6, atol=1e-6, err_msg=name)


def test_a_scorer_without_its_own_narrowing_is_sliced():
    full = lambda rows: np.arange(len(rows) * N_ITEMS, dtype=float).reshape(len(rows), N_ITEMS)
    np.testing.assert_array_equal(on_columns(full, COLUMNS)(ROWS), full(ROWS)[:, COLUMNS])


def test_cold_lists_are_those_of_the_full_scores():
    for name, scorer in scorers().items():
        narrow, _ = cold_top_k(on_columns(scorer, COLUMNS), ROWS, len(COLUMNS))
        sliced, _ = cold_top_k(lambda rows, s=scorer: s(rows)[:, COLUMNS], ROWS, len(COLUMNS))
        assert narrow.shape == (N_USERS, COLD_K)
        np.testing.assert_array_equal(narrow, sliced, err_msg=name)


def test_a_capped_ease_is_ranked_over_its_columns_with_the_lists_of_the_whole_catalogue():
    from recall_pipeline.core.recall.ranking import top_k_dense, top_k_scored
    from recall_pipeline.core.training.ease.model import EaseSolver

    train = sp.random(N_USERS, N_ITEMS, density=0.08, format="csr", random_state=5)
    train = sp.csr_matrix(sp.diags((np.arange(N_USERS) % 5 > 0).astype(float)) @ train)  # some without history:
    train.eliminate_zeros()  # every item ties at 0 for them, so the catalogue's tie order decides their lists
    model_scorer, model = EaseSolver(train, max_items=50, max_dense_cells=0).fit(30.0)  # capped
    weighted = sp.csr_matrix(train.multiply(RNG.random(train.shape)))  # e.g. recency-weighted histories
    for name, scorer in {"solver": model_scorer, "model, weighted": model.scorer(weighted, binarize=False)}.items():
        assert np.array_equal(scorer.proposes, model.columns), name
        full = scorer(ROWS)
        # any columns, inside the cap or not, score as the full scores sliced
        np.testing.assert_array_equal(on_columns(scorer, COLUMNS)(ROWS), full[:, COLUMNS], err_msg=name)
        for k in (10, 60):  # 60: more than some users' unlisted kept items, so lists end in -1
            got = top_k_scored(scorer, ROWS, k, N_ITEMS, train, seed=3)
            want = top_k_dense(full, k, train, ROWS, seed=3)
            np.testing.assert_array_equal(got[0], want[0], err_msg=name)
            np.testing.assert_array_equal(got[1], want[1], err_msg=name)
        assert (got[0] == -1).any() and np.isin(got[0][got[0] >= 0], model.columns).all()
