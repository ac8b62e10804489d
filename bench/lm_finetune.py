"""Cost and effect of fine-tuning the LM's top layer(s) inside the two-tower item tower.

Trains the two-tower model twice on the same data with the same epoch budget: with the LM
frozen (the default) and with its top ``--layers`` layers fine-tuned end to end. Both are
trained on the fit part of the validation cut and early-stopped on the held-out part (no refit,
to bound the time); the figures are the validation Recall@50 and, once, the protocol's warm
Recall@50 and cold Recall@20 of the two-tower model alone (docs/EVALUATION.md). Reads a home
folder that a full run has filled.

    .venv/bin/python bench/lm_finetune.py [--home .recall] [--layers 1] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.settings import HomeLayout  # noqa: E402
from recall_pipeline.core.training import two_tower  # noqa: E402
from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.evaluation.protocol import build_evaluation_data, list_metrics, scorer_lists, validation_matrices  # noqa: E402
from recall_pipeline.core.training.lm_finetune import TopLayers  # noqa: E402
from recall_pipeline.core.features.rating_matrix import load_rating_matrix  # noqa: E402
from recall_pipeline.core.training.recall_model import SEQUENCE_COLUMNS, training_sequences  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    home = Path(args.home)
    with duckdb.connect(str(HomeLayout(home).warehouse), read_only=True) as con:
        split = con.sql("select * from features.interactions_split").pl()
        emb = con.sql("select item_id, embedding from features.item_embeddings order by item_id").pl()
        texts = con.sql("select item_text from clean.items order by item_id").pl()["item_text"].to_list()
    vectors = np.ascontiguousarray(emb["embedding"].to_numpy(), dtype=np.float32)
    rm = load_rating_matrix(HomeLayout(home).rating_matrix)
    fit = two_tower.build_sequences(split.filter(pl.col("val_part") == "fit").select(SEQUENCE_COLUMNS),
                                    rm.user_ids, rm.item_ids)
    _, holdout = validation_matrices(split, rm)
    data = build_evaluation_data(split, rm, None, vectors)
    serving = training_sequences(split, rm)
    base = two_tower.TrainingSettings(max_epochs=args.epochs, refit=False)

    started = time.perf_counter()
    top = TopLayers.from_encoder(TextEncoder(), texts, args.layers)
    cache_seconds = time.perf_counter() - started
    print(f"cached the states entering the top {args.layers} layer(s) of {len(texts)} item texts "
          f"({top.states.shape[0]} tokens) in {cache_seconds:.1f}s")
    rows = []
    for name, settings, lm_top in (("frozen LM (default)", base, None),
                                   (f"top {args.layers} LM layer(s) fine-tuned",
                                    replace(base, lm_finetune_layers=args.layers), top)):
        result = two_tower.train_two_tower(vectors, fit, fit, holdout, training=settings, lm_top=lm_top,
                                           log=lambda e: print(f"  {name}: {e}", flush=True))
        per_epoch = result.seconds / len(result.history)
        warm, cold = scorer_lists(two_tower.dense_scorer(result.model, serving, len(rm.user_ids)), data)
        figures = {(r["slice"], r["metric"], r["k"]): r["value"] for r in list_metrics(name, data, warm, cold)}
        rows.append((name, per_epoch, result.best_epoch, result.best_validation_recall,
                     figures[("warm", "recall", 50)], figures[("cold", "recall", 20)]))
    print(f"\n{'model':<32} {'s/epoch':>8} {'x frozen':>8} {'best ep':>7} {'val R@50':>9} "
          f"{'warm R@50':>9} {'cold R@20':>9}")
    for name, per_epoch, best, val, warm_r, cold_r in rows:
        print(f"{name:<32} {per_epoch:>8.1f} {per_epoch / rows[0][1]:>8.2f} {best:>7} {val:>9.4f} "
              f"{warm_r:>9.4f} {cold_r:>9.4f}")
    print("(no refit on all of training here: trained on the fit part only, so the warm figures sit "
          "below the pipeline's)")


if __name__ == "__main__":
    main()
