"""Early stopping's validation, and validation lists free of its choice.

Each epoch scores the sampled held-out users (Recall@50, the early-stopping figure). The epoch
kept is the one with the best figure on those users, so the kept model's figure on them is
the maximum of a noisy curve: it overstates how the model does on users it was not chosen on.
On a small catalogue the curve moved by up to 0.018 from one epoch to the next (1,327 users:
0.4088, 0.4138, 0.3960, 0.4050), and the route's validation figure, read on the same users,
led plain EASE's beyond the noise (0.4138 against 0.4021) where the test split put EASE ahead
(0.4441 against 0.4266).

So the lists the fusion is chosen on (``list_rows``: ``route_selection.selection_rows``) are
cross-fitted: the sampled users are split into two seeded halves, and each listed user's lists
are those of the epoch that the *other* half's figure would have kept. No user's lists were
chosen on that user. A listed user outside the sample played no part in the choice: theirs
come from the kept model, scored after training. Early stopping itself still reads every
sampled user.

The same two halves say whether one more epoch past the best costs (:meth:`drop_after_best`),
which decides how the served model sees the newest interactions (``trainer.refit_plan``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts
from recall_pipeline.core.recall.ranking import top_k_scored
from recall_pipeline.core.recall.route_selection import paired_gain
from recall_pipeline.core.training.two_tower.sequences import Sequences
from recall_pipeline.core.training.two_tower.serving import dense_scorer
from recall_pipeline.core.training.two_tower.towers import TwoTower

K = 50


class EarlyStoppingValidation:
    """Called with each epoch's model: returns its validation Recall@50 on the sampled users
    (what ``baselines.validation_recall`` computes) and keeps the cross-fitted lists of the
    listed users (module docstring)."""

    def __init__(self, fit: Sequences, fit_seen: sp.csr_matrix, holdout: sp.csr_matrix, seed: int = 0,
                 list_rows: np.ndarray | None = None, depth: int = K):
        self.fit, self.fit_seen, self.seed, self.n_users = fit, fit_seen, seed, holdout.shape[0]
        self.rows = np.flatnonzero(relevant_counts(holdout))
        self.relevant = holdout[self.rows]
        self.counts = relevant_counts(self.relevant)
        listed = np.isin(self.rows, list_rows) if list_rows is not None else np.zeros(len(self.rows), dtype=bool)
        self.listed = np.flatnonzero(listed)                   # positions in self.rows
        self.depth = max(K, depth) if len(self.listed) else K
        self.first_half = np.random.default_rng(seed).random(len(self.rows)) < 0.5
        self.best = {True: -np.inf, False: -np.inf}           # each half's best figure so far
        self.best_epoch = {True: -1, False: -1}               # and the epoch (0-based) it came from
        self.lists = np.full((len(self.listed), self.depth), -1, dtype=np.int64)
        self.per_user: list[np.ndarray] = []                  # each epoch's Recall@50 per sampled user

    def __call__(self, model: TwoTower) -> float:
        if not len(self.rows):
            return 0.0
        return self.observe(self.lists_of(model))

    def lists_of(self, model: TwoTower) -> np.ndarray:
        """The sampled users' top ``depth`` items by ``model`` (fit items left out)."""
        scorer = dense_scorer(model, self.fit, self.n_users)
        return top_k_scored(scorer, self.rows, self.depth, self.fit_seen.shape[1], self.fit_seen, self.seed)[0]

    def observe(self, lists: np.ndarray) -> float:
        """One epoch's lists of the sampled users (rows in ``rows`` order): its Recall@50, and
        the listed users' lists kept where the other half's figure is its best so far."""
        per_user = recall_at_k(hit_matrix(lists[:, :K], self.relevant), self.counts, K)
        self.per_user.append(per_user)
        for half in (True, False):
            chosen_on = self.first_half == half
            figure = float(per_user[chosen_on].mean()) if chosen_on.any() else 0.0
            if figure > self.best[half]:  # the epoch this half would keep: the other half's lists
                self.best[half], self.best_epoch[half] = figure, len(self.per_user) - 1
                other = ~chosen_on[self.listed]
                self.lists[other] = lists[self.listed[other]]
        return float(per_user.mean())

    def cross_fitted(self) -> tuple[np.ndarray, np.ndarray]:
        """(rating-matrix rows, their cross-fitted lists, ``depth`` deep) of the listed users
        in the sample (none before the first epoch)."""
        if not np.isfinite(self.best[True]) and not np.isfinite(self.best[False]):
            return np.empty(0, dtype=np.int64), np.empty((0, self.depth), dtype=np.int64)
        return self.rows[self.listed], self.lists

    def drop_after_best(self, epochs: int | None = None) -> tuple[float, float] | None:
        """(mean, one-sided 95% lower bound) of the validation Recall@50 lost from the best
        epoch to the next, cross-fitted as the lists are: each user's drop is read at the epoch
        the *other* half's figure keeps, so the best epoch's own luck does not count as a drop
        (on the users it was chosen on, the epoch after a noisy peak always looks worse).
        ``epochs``: how many of the epochs observed were whole passes (a time budget can cut the
        last one short; a part of a pass says nothing about a whole one). None when a half is
        empty (nothing to cross-fit on) or either half's best epoch is the last whole one (a
        budget or ``max_epochs`` ended the phase): nothing was measured past it."""
        whole = len(self.per_user) if epochs is None else min(epochs, len(self.per_user))
        if not self.first_half.any() or self.first_half.all():
            return None
        at_best, next_epoch = np.empty(len(self.rows)), np.empty(len(self.rows))
        for half in (True, False):
            best = self.best_epoch[not half]  # the epoch the other half keeps
            if best < 0 or best + 1 >= whole:
                return None
            mine = self.first_half == half
            at_best[mine], next_epoch[mine] = self.per_user[best][mine], self.per_user[best + 1][mine]
        return paired_gain(at_best, next_epoch, self.seed)
