"""Early stopping's validation: the figure it stops on is the protocol's validation Recall@50,
and the lists the fusion is chosen on were never chosen on their own users."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.training.two_tower.early_stopping import EarlyStoppingValidation

N_USERS, N_ITEMS, DEPTH = 40, 60, 80


@pytest.fixture
def holdout() -> sp.csr_matrix:
    """Each user's one held-out item: item ``user`` (items 40 on are never held out); users 0
    and 1 hold nothing out."""
    users = np.arange(2, N_USERS)
    return sp.csr_matrix((np.ones(len(users)), (users, users)), shape=(N_USERS, N_ITEMS))


def validation(holdout: sp.csr_matrix, list_rows: np.ndarray | None) -> EarlyStoppingValidation:
    return EarlyStoppingValidation(None, sp.csr_matrix((N_USERS, N_ITEMS)), holdout, seed=3,
                                   list_rows=list_rows, depth=DEPTH)


def epoch(check: EarlyStoppingValidation, finds: np.ndarray, tag: int) -> np.ndarray:
    """Lists that put each user's held-out item first where ``finds`` (rows' order), else an
    item they did not hold out; then item ``40 + tag`` (never held out), which tells the
    epochs apart; then nothing."""
    rows = check.rows
    lists = np.full((len(rows), check.depth), -1)
    lists[:, 0], lists[:, 1] = np.where(finds, rows, 50), 40 + tag
    return lists


def test_each_listed_user_has_the_lists_of_the_epoch_the_other_half_keeps(holdout):
    check = validation(holdout, np.arange(N_USERS))
    half = check.first_half
    assert 0 < half.sum() < len(half)
    # epoch 1: the first half finds everything; epoch 2: the second half does; epoch 3: nobody
    figures = [check.observe(epoch(check, half, 1)), check.observe(epoch(check, ~half, 2)),
               check.observe(epoch(check, np.zeros(len(half), bool), 3))]
    assert figures == pytest.approx([half.mean(), (~half).mean(), 0.0])
    rows, lists = check.cross_fitted()
    assert rows.tolist() == check.rows.tolist()  # users 0 and 1 hold nothing out: not validated
    # the first half's users take epoch 2's lists (the second half's best), and the other way round
    assert (lists[half, 1] == 42).all() and (lists[~half, 1] == 41).all()
    # so no user's cross-fitted list finds their item: each comes from an epoch chosen on others
    assert not (lists[:, 0] == rows).any()


def test_only_listed_users_in_the_sample_are_cross_fitted(holdout):
    check = validation(holdout, np.array([0, 5, 6, 99]))  # 0: nothing held out; 99: no such user
    check.observe(epoch(check, np.ones(len(check.rows), bool), 1))
    rows, lists = check.cross_fitted()
    assert rows.tolist() == [5, 6] and lists.shape == (2, DEPTH)


def test_without_listed_users_it_keeps_no_lists_and_ranks_50_deep(holdout):
    check = validation(holdout, None)
    assert check.depth == 50 and validation(holdout, np.arange(4)).depth == DEPTH
    assert check.cross_fitted()[0].size == 0


def test_the_drop_past_the_best_epoch_is_read_where_the_other_half_peaks(holdout):
    check = validation(holdout, None)
    half, everyone, nobody = check.first_half, np.ones(len(check.rows), bool), np.zeros(len(check.rows), bool)
    # the first half peaks at epoch 2 (kept through 3), the second at epoch 3; epoch 4: the second half only
    for tag, finds in enumerate((nobody, half, everyone, ~half), start=1):
        check.observe(epoch(check, finds, tag))
    # first-half users read at epoch 3 -> 4: each loses its item; second-half users at 2 -> 3:
    # each gains it. Read at the whole sample's best (3 -> 4) it would be the first half's share.
    mean, lower = check.drop_after_best()
    assert mean == pytest.approx(half.mean() - (~half).mean())
    # both halves peaking at the same epoch: every first-half user loses its item, beyond the noise
    check = validation(holdout, None)
    for tag, finds in enumerate((nobody, everyone, ~half), start=1):
        check.observe(epoch(check, finds, tag))
    mean, lower = check.drop_after_best()
    assert mean == pytest.approx(half.mean()) and 0 < lower < mean


def test_a_peak_one_half_alone_shows_is_not_read_on_its_own_users(holdout):
    """The first half finds its items at epoch 1 only, the second half from epoch 2 on. Each
    user is read at the other half's best: the first half's at epoch 2 -> 3 (nothing lost), the
    second half's at epoch 1 -> 2 (each gains its item): no drop, where the first half's own
    peak, read on its own users, would look like one."""
    check = validation(holdout, None)
    half = check.first_half
    for tag, finds in enumerate((half, ~half, ~half), start=1):
        check.observe(epoch(check, finds, tag))
    mean, lower = check.drop_after_best()
    assert mean == pytest.approx(-(~half).mean()) and lower < 0


def test_no_drop_is_measured_when_the_best_epoch_is_the_last(holdout):
    check = validation(holdout, None)
    assert check.drop_after_best() is None  # nothing observed
    check.observe(epoch(check, np.zeros(len(check.rows), bool), 1))
    check.observe(epoch(check, np.ones(len(check.rows), bool), 2))
    assert check.drop_after_best() is None


def test_a_part_of_a_pass_past_the_best_is_not_a_drop(holdout):
    """A budget can stop the last epoch mid-pass: read up to the whole epochs only, the best
    is the last whole one and nothing was measured past it."""
    check = validation(holdout, None)
    for tag, finds in enumerate((np.zeros(len(check.rows), bool), np.ones(len(check.rows), bool),
                                 np.zeros(len(check.rows), bool)), start=1):
        check.observe(epoch(check, finds, tag))
    assert check.drop_after_best()[0] == pytest.approx(1.0)  # the third epoch read as whole
    assert check.drop_after_best(epochs=2) is None


def test_a_sample_with_an_empty_half_has_nothing_to_cross_fit():
    one = sp.csr_matrix(([1.0], ([5], [5])), shape=(N_USERS, N_ITEMS))  # one validated user
    check = validation(one, None)
    for tag, finds in enumerate((np.ones(1, bool), np.zeros(1, bool)), start=1):
        check.observe(epoch(check, finds, tag))
    assert check.drop_after_best() is None
