"""Compare two-tower settings on the validation cut (never the test split).

Each setting is trained on the fit part and early-stopped on the held-out part's Recall@50
(docs/EVALUATION.md, Split 4), exactly as ``recall_model`` does before its refit. Reads a home
folder that a full run has filled.

    .venv/bin/python -m bench.tuning.tune_two_tower [--home .recall]

Recorded run: bench/results/tuning/tune_two_tower.txt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from recall_pipeline.settings import HomeLayout  # noqa: E402
from recall_pipeline.core.training import two_tower
from recall_pipeline.core.evaluation.protocol import validation_matrices
from recall_pipeline.core.features.rating_matrix import read_rating_matrix
from recall_pipeline.core.training.recall_model import SEQUENCE_COLUMNS, settings_from

VARIANTS = {
    "default": {},
    "history_length 100": {"history_length": 100},
    "dim 256, hidden 512": {"dim": 256, "hidden": 512},
    "temperature 0.1": {"temperature": 0.1},
    "id_dropout 0.25": {"id_dropout": 0.25},
    "no logQ correction": {"logq": False},
    "temperature 0.2": {"temperature": 0.2},
    "temperature 0.1, history 100": {"temperature": 0.1, "history_length": 100},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--only", nargs="*", help="names of the variants to run (default: all)")
    args = parser.parse_args()
    home = Path(args.home)
    with duckdb.connect(str(HomeLayout(home).warehouse), read_only=True) as con:
        split = con.sql("select * from features.interactions_split").pl()
        emb = con.sql("select item_id, embedding from features.item_embeddings order by item_id").pl()
        rm = read_rating_matrix(con)
    vectors = np.ascontiguousarray(emb["embedding"].to_numpy(), dtype=np.float32)
    fit = two_tower.build_sequences(split.filter(pl.col("val_part") == "fit").select(SEQUENCE_COLUMNS),
                                    rm.user_ids, rm.item_ids)
    _, holdout = validation_matrices(split, rm)
    print(f"{'setting':<30} {'best epoch':>10} {'val R@50':>9} {'s/epoch':>8}")
    for name, change in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        settings = settings_from({"refit": "none", **change})
        result = two_tower.train_two_tower(vectors, fit, fit, holdout, *settings)
        print(f"{name:<30} {result.best_epoch:>10} {result.best_validation_recall:>9.4f} "
              f"{result.seconds / len(result.history):>8.1f}", flush=True)


if __name__ == "__main__":
    main()
