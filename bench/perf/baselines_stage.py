"""The baselines of ``evaluation_report`` (MostPopular, ItemKNN, EASE) alone, on a home whose
split is stored: each one's time, tuned value, warm Recall@50 and the process's peak memory.

It needs only the stages up to ``rating_matrix`` (no LM, no model), so the baselines can be
measured at L without the rest of the graph:

    .venv/bin/python -m bench.perf.scale --sizes L --work /tmp/scale \
        --stages raw_interactions_and_items feedback_events cleaned_item_text cleaned_interactions rating_matrix
    .venv/bin/python -m bench.perf.baselines_stage --home /tmp/scale/L/home [--knn-max-items N]

The slices are sampled as the evaluation samples them (``MAX_EVALUATION_CELLS``), the
baselines tuned as it tunes them (``protocol.run_baselines``). Recorded runs:
bench/results/perf/baselines_stage.txt.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime
from pathlib import Path

from bench.perf.scale import vm_hwm_mb
from recall_pipeline.core.evaluation import baselines, protocol
from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts
from recall_pipeline.defs import tables
from recall_pipeline.resources import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a home whose rating_matrix stage has run")
    parser.add_argument("--knn-max-items", type=int, default=baselines.KNN_MAX_ITEMS,
                        help="ItemKNN over at most this many most-interacted items")
    args = parser.parse_args()
    baselines.KNN_MAX_ITEMS = args.knn_max_items
    warehouse = Warehouse(path=str(Path(args.home).resolve() / "warehouse.duckdb"))
    started = time.perf_counter()
    split, rm = warehouse.query("select * from features.interactions_split"), tables.rating_matrix(warehouse)
    data = protocol.build_evaluation_data(split, rm, max_cells=protocol.MAX_EVALUATION_CELLS)
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, {len(rm.user_ids):,} users x "
          f"{len(rm.item_ids):,} items, {rm.matrix.nnz:,} training interactions; ItemKNN over at most "
          f"{args.knn_max_items:,} items")
    print(f"loaded and sampled in {time.perf_counter() - started:.1f} s (warm slice {len(data.warm.rows):,} users), "
          f"peak {vm_hwm_mb():,.0f} MiB")
    started = time.perf_counter()
    results = protocol.run_baselines(split, data)
    seconds = time.perf_counter() - started
    for result in results:
        relevant = data.warm.relevant
        warm = recall_at_k(hit_matrix(result.warm_lists[:, :50], relevant), relevant_counts(relevant), 50).mean()
        tuned = f", {result.parameter} {result.tuned.value:g} of {result.tuned.validation_recall}" if result.tuned else ""
        print(f"{result.name}: warm Recall@50 {warm:.4f}{tuned}")
    print(f"run_baselines: {seconds:.1f} s, peak {vm_hwm_mb():,.0f} MiB")


if __name__ == "__main__":
    main()
