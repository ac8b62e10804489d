"""What cleaning held back, counted beside the evaluation figures and in the HTML report."""

import polars as pl

from recall_pipeline.core.evaluation.evaluation_report import ingest_rows, within_unit_interval
from recall_pipeline.core.evaluation.protocol import Report
from recall_pipeline.core.evaluation.report import render_html


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
