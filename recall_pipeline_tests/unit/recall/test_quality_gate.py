"""The quality gate: a drop of the per-user validation Recall@50 beyond the bootstrap's noise
fails, unless accepted; no drop, or a drop within the noise, passes; only common users count."""

from __future__ import annotations

import numpy as np
import pytest

from recall_pipeline.core.recall import quality_gate as qg

USERS = np.arange(400)


def figures(recall: np.ndarray, users: np.ndarray = USERS, cut: str = "cut-a") -> qg.UserFigures:
    return qg.UserFigures(cut, users, recall)


def test_a_clear_drop_fails_and_names_both_figures_and_how_to_accept_it():
    rng = np.random.default_rng(0)
    published = rng.uniform(0.2, 0.6, len(USERS))
    new = published - 0.05  # every user loses
    result = qg.judge(figures(new), figures(published), qg.SAME_CUT, "run-1")
    assert not result.passed and not result.accepted
    assert result.change == pytest.approx(-0.05) and result.upper < 0
    assert f"{new.mean():.4f}" in result.message and f"{published.mean():.4f}" in result.message
    assert "run-1" in result.message and "cut-a" in result.message and "--accept-drop" in result.message
    accepted = qg.judge(figures(new), figures(published), qg.SAME_CUT, "run-1", accept_drop=True)
    assert accepted.passed and accepted.accepted and "accepted" in accepted.message


def test_equal_lists_and_noise_pass():
    rng = np.random.default_rng(1)
    published = rng.uniform(0.0, 1.0, len(USERS))
    assert qg.judge(figures(published.copy()), figures(published), qg.SAME_CUT, "r").passed
    noisy = np.clip(published + rng.normal(0.0, 0.2, len(USERS)) - 0.002, 0, 1)  # a tiny mean change in much noise
    result = qg.judge(figures(noisy), figures(published), qg.SAME_CUT, "r")
    assert result.passed and result.upper > 0 > result.change


def test_only_users_in_both_count():
    published = np.full(len(USERS), 0.5)
    new = figures(np.r_[np.full(200, 0.5), np.zeros(100)], users=np.r_[USERS[:200], np.arange(1000, 1100)])
    result = qg.judge(new, figures(published), qg.MOVED_CUT, "r")
    assert result.users == 200 and result.passed and result.change == 0.0
    nobody = qg.judge(figures(np.ones(3), users=np.array([7001, 7002, 7003])), figures(published), qg.SAME_CUT, "r")
    assert nobody.passed and nobody.users == 0 and "no validation user in common" in nobody.message


def test_figures_round_trip_through_json():
    stored = figures(np.array([0.25, 0.5]), users=np.array([3, 9]))
    again = qg.UserFigures.from_json(stored.to_json())
    assert again.cut == "cut-a" and again.user_ids.tolist() == [3, 9] and again.recall.tolist() == [0.25, 0.5]
    assert qg.UserFigures.from_json(None) is None


def test_the_published_figure_is_the_stored_one_on_the_same_cut_and_a_rescore_on_a_moved_one():
    from recall_pipeline.core.recall.chosen_settings import SEARCHED, ChosenSettings
    from recall_pipeline.core.recall.routes import RouteSettings

    rng = np.random.default_rng(1)
    stored = rng.uniform(0.2, 0.6, len(USERS))
    published = ChosenSettings(RouteSettings(), SEARCHED, "run-1", {"validation_users": figures(stored).to_json()})
    rescored = []

    def rescore(settings):
        rescored.append(settings)
        return figures(stored - 0.1, cut="cut-b")

    same = qg.against_published(figures(stored), published, "cut-a", rescore)
    assert same.passed and same.basis == qg.SAME_CUT and rescored == []
    moved = qg.against_published(figures(stored, cut="cut-b"), published, "cut-b", rescore)
    assert moved.passed and moved.basis == qg.MOVED_CUT and rescored == [RouteSettings()]
    assert moved.change == pytest.approx(0.1, abs=1e-6)
    assert qg.against_published(None, published, "cut-a", rescore).basis.startswith("no held-out user")
    assert qg.against_published(figures(stored), None, "cut-a", rescore).basis.startswith("no published version")
