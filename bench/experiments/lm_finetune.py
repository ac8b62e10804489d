"""Cost and effect of fine-tuning the LM's top layer(s) inside the two-tower item tower, judged
on validation data only (docs/EVALUATION.md rule 4: the test split is never read here).

The variants (the LM frozen, the default; its top ``--layers`` layers fine-tuned end to end)
are trained with the same epoch budget on the same data: the training part of the protocol's
split, from which a seeded 10% of the training items are held out as pseudo-cold items (never
items of C) and the rest is cut per user by the protocol's chronological rule
(``core.features.split.pseudo_cold_split``). Each variant trains on the inner fit part and
early-stops on the inner holdout (no refit, to bound the time); the comparison is on
- warm validation: the held-out last fifth of each user's remaining training interactions,
  ranked over the whole catalogue minus the user's earlier interactions (Recall@50, NDCG@10);
- pseudo-cold validation: users with a relevant interaction on a pseudo-cold item rank the
  pseudo-cold items alone (Recall@20, NDCG@20): what serves cold items.
Reads a home folder that a full run has filled.

    .venv/bin/python -m bench.experiments.lm_finetune [--home .recall] [--layers 1] [--epochs 4] [--variants frozen,finetuned]

Recorded run: bench/results/experiments/lm_finetune.txt.
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

from recall_pipeline.settings import HomeLayout  # noqa: E402
from recall_pipeline.core.training import recall_model, two_tower  # noqa: E402
from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.features.split import pseudo_cold_split, split_summary  # noqa: E402
from recall_pipeline.core.evaluation.protocol import build_evaluation_data, list_metrics, scorer_lists  # noqa: E402
from recall_pipeline.core.training.lm_finetune import TopLayers  # noqa: E402

COLUMNS = (("val", "warm", "recall", 50), ("val", "warm", "ndcg", 10),
           ("p-cold", "cold", "recall", 20), ("p-cold", "cold", "ndcg", 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variants", default="frozen,finetuned")
    args = parser.parse_args()
    layout = HomeLayout(Path(args.home))
    with duckdb.connect(str(layout.warehouse), read_only=True) as con:
        # the training part only: nothing of the test split is read
        train = con.sql("select user_id, item_id, rating, timestamp, part, val_part, is_relevant "
                        "from features.interactions_split where part = 'train'").pl()
        emb = con.sql("select item_id, embedding from features.item_embeddings order by item_id").pl()
        texts = con.sql("select item_text from clean.items order by item_id").pl()["item_text"].to_list()
    vectors = np.ascontiguousarray(emb["embedding"].to_numpy(), dtype=np.float32)
    pseudo = pseudo_cold_split(train)
    rm = build_rating_matrix(pseudo, emb["item_id"].to_numpy())
    data = build_evaluation_data(pseudo, rm, None, vectors)
    serving = recall_model.training_sequences(pseudo, rm)
    counts = split_summary(pseudo)
    print(f"pseudo-cold validation split of the training part: {counts['cold_items']} pseudo-cold items "
          f"({counts['cold_interactions']} interactions, {len(data.cold.rows)} users), warm validation "
          f"{counts['warm_test_interactions']} interactions ({len(data.warm.rows)} users), "
          f"fit {counts['validation_fit']} / early-stopping holdout {counts['validation_holdout']}")
    base = recall_model.settings_from({"max_epochs": args.epochs, "refit": "none"})
    variants = []
    wanted = set(args.variants.split(","))
    if "frozen" in wanted:
        variants.append(("frozen LM (default)", base, None))
    if "finetuned" in wanted:
        started = time.perf_counter()
        top = TopLayers.from_encoder(TextEncoder(), texts, args.layers)
        print(f"cached the states entering the top {args.layers} layer(s) of {len(texts)} item texts "
              f"({top.states.shape[0]} tokens) in {time.perf_counter() - started:.1f}s")
        tuned_lm = base._replace(training=replace(base.training, lm_finetune_layers=args.layers))
        variants.append((f"top {args.layers} LM layer(s) fine-tuned", tuned_lm, top))
    rows = []
    for name, settings, lm_top in variants:
        result = recall_model.train(pseudo, rm, vectors, settings, lm_top=lm_top,
                                    log=lambda e, name=name: print(f"  {name}: {e}", flush=True))
        warm, cold = scorer_lists(two_tower.dense_scorer(result.model, serving, len(rm.user_ids)), data)
        figures = {(r["slice"], r["metric"], r["k"]): r["value"] for r in list_metrics(name, data, warm, cold)}
        rows.append((name, result.seconds / len(result.history), result.best_epoch,
                     [figures[key[1:]] for key in COLUMNS]))
    header = " ".join(f"{f'{part} {metric}@{k}':>15}" for part, _, metric, k in COLUMNS)
    print(f"\n{'model':<32} {'s/epoch':>8} {'x first':>8} {'best ep':>7} {header}")
    for name, per_epoch, best, values in rows:
        print(f"{name:<32} {per_epoch:>8.1f} {per_epoch / rows[0][1]:>8.2f} {best:>7} "
              + " ".join(f"{v:>15.4f}" for v in values))
    print("(validation = the last fifth of each user's training interactions less the pseudo-cold items; "
          "pseudo-cold = a seeded 10% of the training items; trained on the inner fit part, no refit)")


if __name__ == "__main__":
    main()
