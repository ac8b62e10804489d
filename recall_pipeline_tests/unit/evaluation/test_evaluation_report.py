"""What cleaning held back, counted beside the evaluation figures and in the HTML report."""

import polars as pl

from recall_pipeline.core.evaluation.evaluation_report import ingest_rows, within_unit_interval
from recall_pipeline.core.evaluation.protocol import Report
from recall_pipeline.core.evaluation.report_html import render_html


def test_ingest_rows_count_quarantined_and_burst_rows():
    counts = pl.DataFrame({"reason": ["duplicate", "suspected_burst"], "rows": [3, 200]})
    rows = {r["metric"]: r["value"] for r in ingest_rows(counts)}
    assert rows == {"quarantined_rows": 203.0, "suspected_burst_rows": 200.0}
    assert {(r["model"], r["slice"], r["k"]) for r in ingest_rows(counts)} == {("data", "ingest", 0)}
    assert {r["metric"]: r["value"] for r in ingest_rows(None)} == {"quarantined_rows": 0.0,
                                                                    "suspected_burst_rows": 0.0}


def test_counts_are_not_held_to_the_unit_interval():
    stored = pl.DataFrame({"metric": ["recall", "suspected_burst_rows", "quarantined_rows"],
                           "value": [0.5, 200.0, 203.0]})
    assert within_unit_interval(stored)
    assert not within_unit_interval(stored.with_columns(value=pl.lit(2.0)))


def test_the_html_report_has_a_section_for_them():
    report = Report(rows=ingest_rows(pl.DataFrame({"reason": ["suspected_burst"], "rows": [1200]})))
    page = render_html(report, {}, "run-1", "v1")
    assert "Data held back at cleaning" in page and "<code>suspected_burst_rows</code>: 1,200" in page


def test_the_html_report_shows_finals_comparisons_when_given():
    compared = pl.DataFrame({"model": ["final"], "against": ["EASE"], "slice": ["warm"], "metric": ["recall"],
                             "k": [50], "gain": [-0.0031], "lower": [-0.0089], "upper": [0.0027], "users": [2000]})
    report = Report(rows=ingest_rows(None))
    page = render_html(report, {}, "run-1", "v1", comparisons=compared)
    assert "final against each model" in page
    assert "<td>EASE</td><td>warm recall@50</td><td>-0.0031</td><td>-0.0089</td><td>0.0027</td><td>2000</td>" in page
    assert "final against each model" not in render_html(report, {}, "run-1", "v1")


def test_the_ease_route_is_scored_with_the_published_runs_settings():
    """``route:ease`` is the route as the published run computed it, not as the defaults would:
    with a recency weighting that run did not use, the user who saw 10 long ago and 11 last
    would be offered 13 first; unweighted, 12 and 13 tie."""
    from datetime import datetime

    import numpy as np
    import pytest

    from recall_pipeline.core.evaluation.evaluation_report import EvaluationInputs, route_scorers
    from recall_pipeline.core.features.rating_matrix import build_rating_matrix
    from recall_pipeline.core.recall.routes import RouteSettings

    rows = [(u, item, 4.0, datetime(2020, 1, 1 + n), "train")
            for u in range(1, 9) for n, item in enumerate((10, 12) if u <= 4 else (11, 13))]
    rows += [(99, 10, 4.0, datetime(2020, 1, 1), "train"), (99, 11, 4.0, datetime(2020, 3, 1), "train")]
    split = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")
    rm = build_rating_matrix(split, np.array([10, 11, 12, 13]))
    me = np.searchsorted(rm.user_ids, [99])

    def ease_scores(settings: RouteSettings | None) -> np.ndarray:
        given = {} if settings is None else {"route_settings": settings}
        inputs = EvaluationInputs(
            split=split, rm=rm, candidates=pl.DataFrame(), candidates_run_id="r", candidates_model_version="v",
            item_vectors=np.eye(4, dtype=np.float32), genres=[[]] * 4,
            profiles=pl.DataFrame({"user_id": rm.user_ids, "embedding": np.ones((len(rm.user_ids), 4), np.float32)}),
            interest_owners=np.zeros(0, dtype=np.int64), interests=np.zeros((0, 4), np.float32),
            two_tower=lambda r: np.zeros((len(r), 4)), **given)
        return route_scorers(inputs)["ease"](me)[0]

    published = ease_scores(RouteSettings(ease_lambda=1.0, ease_recency_tau=0.0, ease_window=0))
    assert published[3] == pytest.approx(published[2])
    recency = ease_scores(RouteSettings(ease_lambda=1.0, ease_window=0))
    assert recency[3] > recency[2]
    assert ease_scores(None).tolist() != published.tolist()  # without them: the defaults, another ranking


def test_final_ranks_the_cold_items_with_the_cold_scorer_the_run_chose():
    """With the interest view chosen on pseudo-cold validation, ``final``'s cold scorer is the
    user's best interest (here user 1's two interests read like items 2 and 3), and
    ``route:text_cf`` is the same scorer on the items untrained at fit; with TextCF chosen it
    is TextCF's (which differs)."""
    from dataclasses import replace
    from datetime import datetime

    import numpy as np

    from recall_pipeline.core.evaluation.evaluation_report import EvaluationInputs, route_scorers, text_cf_scorer
    from recall_pipeline.core.features.rating_matrix import build_rating_matrix
    from recall_pipeline.core.training import text_cf

    split = pl.DataFrame([(1, 10, 4.0, datetime(2020, 1, 1), "train"), (2, 11, 4.0, datetime(2020, 1, 2), "train")],
                         schema=["user_id", "item_id", "rating", "timestamp", "part"], orient="row")
    rm = build_rating_matrix(split, np.array([10, 11, 12, 13]))
    vectors = np.eye(4, dtype=np.float32)
    chosen = text_cf.fit_for_serving(rm.matrix, rm.item_ids, text_cf.item_features(vectors), 0.03, 0.0, "r",
                                     cold_scorer="lm_interest")
    inputs = EvaluationInputs(
        split=split, rm=rm, candidates=pl.DataFrame(), candidates_run_id="r", candidates_model_version="v",
        item_vectors=vectors, genres=[[]] * 4,
        profiles=pl.DataFrame({"user_id": rm.user_ids, "embedding": np.eye(4, dtype=np.float32)[:2]}),
        interest_owners=np.array([1, 1, 2]), interests=np.array([[0, 0, 0.4, 0], [0, 0, 0, 0.9], [0, 1, 0, 0]],
                                                                np.float32),
        two_tower=lambda r: np.zeros((len(r), 4)), text_cf=chosen)
    np.testing.assert_allclose(text_cf_scorer(inputs)(np.array([0, 1])), [[0, 0, 0.4, 0.9], [0, 1, 0, 0]])
    np.testing.assert_allclose(route_scorers(inputs)["text_cf"](np.array([0])), [[-np.inf, -np.inf, 0.4, 0.9]])
    by_text_cf = text_cf_scorer(replace(inputs, text_cf=replace(chosen, cold_scorer="text_cf")))(np.array([0]))
    assert not np.allclose(by_text_cf, [[0, 0, 0.4, 0.9]])
