"""A home folder whose path holds a quote and a space: the warehouse, the published copy and
the MLflow store all work there (no SQL or URI is assembled around a raw path)."""

import duckdb
import polars as pl

from recall_pipeline.core.recall.published_tables import publish_copy, sql_literal
from recall_pipeline.definitions import build_resources
from recall_pipeline.settings import HomeLayout


def test_sql_literal_doubles_quotes():
    assert sql_literal("it's") == "'it''s'"
    with duckdb.connect() as con:
        assert con.execute(f"select {sql_literal(chr(39) + 'x; drop table y; --')}").fetchone()[0] == "'x; drop table y; --"


def test_a_home_path_with_a_quote_and_a_space_works(tmp_path):
    home = HomeLayout(tmp_path / "it's my home").create()
    resources = build_resources(home)
    warehouse = resources["warehouse"]
    warehouse.replace_table("recall.candidates", pl.DataFrame({"run_id": ["r"], "user_id": [1], "item_id": [2]}))
    counts = publish_copy(home.warehouse, home.published,
                          {"recall.candidates": "select * from src.recall.candidates"})
    assert counts == {"recall.candidates": 1}
    with duckdb.connect(str(home.published), read_only=True) as con:
        assert con.execute("select item_id from recall.candidates").fetchall() == [(2,)]
    with resources["mlflow"].start_run("odd path", {"kind": "test"}) as (tracker, run):
        tracker.log_metric("x", 1.0)
    from mlflow import MlflowClient

    stored = MlflowClient(resources["mlflow"].tracking_uri).get_run(run.info.run_id)
    assert stored.data.metrics == {"x": 1.0}
    assert "it's my home" in stored.info.artifact_uri or "it%27s%20my%20home" in stored.info.artifact_uri


# A whole CLI run and recall in such a home: system/test_crash_recovery.py (its home is named "it's a home").
