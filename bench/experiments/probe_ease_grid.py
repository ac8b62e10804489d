"""Probe: plain EASE's validation Recall@50 beyond the regularisation grid (50 to 1,600), on the
users and the fit part ``route_settings`` scores (``validation_routes``: its seeded sample of
held-out users; the test split is never read). At M and L the grid's top value won: does the
curve go on rising past it?

    .venv/bin/python -m bench.experiments.probe_ease_grid --home <a filled home> [--lambdas 800 1600 3200 6400]

Recorded run: bench/results/experiments/probe_ease_grid.txt.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np

from bench.machine import cpu_name
from recall_pipeline.core.recall.route_selection import DEFAULT_MAX_USERS, plain_ease, selection_rows
from recall_pipeline.core.recall.routes import RouteSettings
from recall_pipeline.core.recall.validation_routes import ease_lists, fit_matrix, recall_at_50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--lambdas", nargs="+", type=float, default=[800.0, 1600.0, 3200.0, 6400.0])
    args = parser.parse_args()
    with duckdb.connect(str(args.home / "warehouse.duckdb"), read_only=True) as con:
        train = con.sql("select user_id, item_id, rating, timestamp, part, val_part, is_relevant "
                        "from features.interactions_split where part = 'train'").pl()
        item_ids = np.sort(con.sql("select item_id from features.item_embeddings").pl()["item_id"].to_numpy())
    fit, holdout = fit_matrix(train, item_ids)
    start = RouteSettings()
    rows = selection_rows(holdout, DEFAULT_MAX_USERS, seed=start.seed)
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}; {args.home}: {len(rows)} validation users, "
          f"{fit.matrix.shape[1]} items, EASE over at most {start.ease_max_items} of them")
    for lam in args.lambdas:
        began = time.perf_counter()
        settings = plain_ease(start, lam).applied(start)
        lists = ease_lists(fit, replace(settings, ease_lambda=lam), rows, holdout[rows], only_start=True)[0]
        print(f"lambda {lam:>7g}: validation Recall@50 {recall_at_50(next(iter(lists.values())), holdout[rows]):.5f} "
              f"({time.perf_counter() - began:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
