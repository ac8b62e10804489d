"""The quality gate: a full refresh publishes its lists only if their validation Recall@50 is not
below the published version's beyond the noise.

Both figures are the fused lists' per-user Recall@50 on the validation cut (``route_selection``:
routes built on the fit part, scored on the held-out part, the same seeded users), never the
test split. Which figure stands for the published version depends on the cut:

- **the same cut** (no new training data since): the per-user figures stored with the published
  version's choice, so a worse model (a two-tower version, an EASE or TextCF fit) shows as well as
  worse settings;
- **a moved cut**: the held-out part is another, so a stored figure is not comparable; the
  published version's settings are scored on this run's lists of the new cut, the same users
  (the settings are judged here; each model is judged by its own rule, the two-tower version by
  the champion rule across the moved cut).

The comparison is paired over the users both figures cover: the mean per-user change and its
upper ``CONFIDENCE`` bound from a bootstrap (``route_selection.paired_gain``). A drop beyond the
noise (the upper bound below zero) fails the gate unless the run accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recall_pipeline.core.recall.chosen_settings import ChosenSettings
from recall_pipeline.core.recall.route_selection import CONFIDENCE, paired_gain
from recall_pipeline.core.recall.routes import RouteSettings

SAME_CUT, MOVED_CUT = "same cut: the published version's stored figures", \
    "moved cut: the published version's settings scored on this cut"
ACCEPT_HOW = "to publish anyway: route_settings config accept_drop: true, or recall-pipeline run --accept-drop"


@dataclass(frozen=True)
class UserFigures:
    """Per-user validation Recall@50 of one list set, with the cut it was measured on."""

    cut: str
    user_ids: np.ndarray
    recall: np.ndarray

    def to_json(self) -> dict:
        return {"cut": self.cut, "user_ids": self.user_ids.tolist(), "recall@50": [round(float(v), 6) for v in self.recall]}

    @classmethod
    def from_json(cls, stored: dict | None) -> "UserFigures | None":
        if not stored:
            return None
        return cls(stored["cut"], np.asarray(stored["user_ids"]), np.asarray(stored["recall@50"], dtype=np.float64))


@dataclass(frozen=True)
class GateResult:
    passed: bool
    accepted: bool          # a drop beyond the noise that the run was told to accept
    new: float             # mean validation Recall@50, this run's lists, on the common users
    published: float       # the same for the published version
    change: float          # new - published, mean per user
    upper: float           # its upper CONFIDENCE bound
    users: int
    basis: str             # SAME_CUT or MOVED_CUT, or why nothing was compared
    published_run: str
    cut: str

    @property
    def message(self) -> str:
        if not self.users:
            return f"nothing to compare: {self.basis}"
        figures = (f"validation Recall@50 {self.new:.4f} against {self.published:.4f} for the published version "
                   f"(run {self.published_run}) on {self.users} users of cut {self.cut[:12]} ({self.basis}); "
                   f"change {self.change:+.4f}, {CONFIDENCE:.0%} upper bound {self.upper:+.4f}")
        if self.passed and not self.accepted:
            return f"no drop beyond the noise: {figures}"
        if self.accepted:
            return f"a drop beyond the noise, accepted by configuration: {figures}"
        return f"a drop beyond the noise stops publication: {figures}; {ACCEPT_HOW}"

    def as_metadata(self) -> dict:
        return {"passed": self.passed, "accepted": self.accepted, "new_recall@50": round(self.new, 5),
                "published_recall@50": round(self.published, 5), "change": round(self.change, 5),
                "upper_bound": round(self.upper, 5), "users": self.users, "basis": self.basis,
                "published_run": self.published_run, "cut": self.cut}


def nothing_to_compare(why: str, cut: str = "") -> GateResult:
    return GateResult(True, False, 0.0, 0.0, 0.0, 0.0, 0, why, "", cut)


def judge(new: UserFigures, published: UserFigures, basis: str, published_run: str, accept_drop: bool = False,
          seed: int = 0) -> GateResult:
    """Compare ``new`` with ``published`` on the users both measured (paired bootstrap)."""
    common, new_at, published_at = np.intersect1d(new.user_ids, published.user_ids, return_indices=True)
    if not len(common):
        return nothing_to_compare("no validation user in common with the published version's figures", new.cut)
    ours, theirs = new.recall[new_at], published.recall[published_at]
    drop, lower = paired_gain(theirs, ours, seed)  # published over new: its lower bound is -(upper of new - published)
    change, upper = -drop, -lower
    dropped = upper < 0
    return GateResult(not dropped or accept_drop, dropped and accept_drop, float(ours.mean()), float(theirs.mean()),
                      change, upper, len(common), basis, published_run, new.cut)


def against_published(ours: UserFigures | None, published: ChosenSettings | None, cut: str,
                      rescore: Callable[[RouteSettings], UserFigures | None], accept_drop: bool = False) -> GateResult:
    """The gate of ``ours`` (the served lists' figures on ``cut``) against the published
    version's choice: its stored per-user figures on the same cut, else its settings ``rescore``d
    on this cut's lists."""
    if published is None or ours is None:
        return nothing_to_compare("no published version yet" if published is None else "no held-out user", cut)
    stored = UserFigures.from_json(published.record.get("validation_users"))
    if stored is not None and stored.cut == cut:
        return judge(ours, stored, SAME_CUT, published.run_id, accept_drop)
    return judge(ours, rescore(published.settings), MOVED_CUT, published.run_id, accept_drop)
