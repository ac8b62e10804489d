"""Where ``evaluation_report``'s time goes: its computation alone on a home a full run filled,
under cProfile, with the functions that took longest.

The same inputs and code path as the asset (``defs.tables.evaluation_inputs``, then
``evaluate_published`` with the baselines), without Dagster, the warehouse writes or the HTML
report. ``--figures FILE`` writes every figure (model, slice, metric, k, value) as JSON, so that
two checkouts' figures on one home can be compared.

    .venv/bin/python -m bench.perf.evaluation_stage --home .recall [--figures out.json] [--top 25]

Recorded runs: bench/results/perf/evaluation_stage.txt.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from datetime import datetime
from pathlib import Path

from recall_pipeline.core.evaluation.evaluation_report import evaluate_published
from recall_pipeline.defs import tables
from recall_pipeline.resources import PipelineHome, Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a home a full run filled")
    parser.add_argument("--figures", help="write the figures to this JSON file")
    parser.add_argument("--top", type=int, default=25, help="how many functions to list")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    inputs = tables.evaluation_inputs(Warehouse(path=str(home / "warehouse.duckdb")), PipelineHome(root=str(home)))
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, home {home}: "
          f"{len(inputs.rm.user_ids)} users x {len(inputs.rm.item_ids)} items")
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    evaluation = evaluate_published(inputs, True)
    profile.disable()
    print(f"evaluate_published: {time.perf_counter() - started:.1f} s")
    if args.figures:
        rows = sorted((r["model"], r["slice"], r["metric"], r["k"], r["value"]) for r in evaluation.report.rows)
        Path(args.figures).write_text(json.dumps(rows))
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
