"""Probe: cold items ranked by TextCF and the two-tower item tower together, on pseudo-cold
validation only (the protocol's rule 4: a seeded 10% of the *training* items held out with their
interactions, ``core.features.split.pseudo_cold_split``; the cold test items are never read).

Both models are trained as the pipeline trains them, on the pseudo-cold split's training part:
the two-tower model early-stopped on its validation cut and refit; TextCF at the pipeline's
chosen lambda 0.03 / alpha 0.5 (chosen on these same pseudo-cold items, so its figure is the
tuned one). Each model's scores over the pseudo-cold items are standardised per user and summed
with the two-tower's at weight w (0: TextCF alone, as published).

    .venv/bin/python -m bench.experiments.probe_cold_ensemble --home <bundled home>

Recorded run: bench/results/experiments/probe_cold_ensemble.txt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.evaluation.protocol import COLD_K, build_evaluation_data  # noqa: E402
from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.features.split import pseudo_cold_split  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.training import recall_model, text_cf, two_tower  # noqa: E402

from bench.validation import read_split_and_embeddings  # noqa: E402

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0)


def standardised(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(axis=1, keepdims=True)) / np.maximum(scores.std(axis=1, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    args = parser.parse_args()
    split, ids, vectors = read_split_and_embeddings(Path(args.home))
    pseudo = pseudo_cold_split(split.filter(split["part"] == "train"))  # the training part only
    rm = build_rating_matrix(pseudo, ids)
    data = build_evaluation_data(pseudo, rm)
    rows, cols, relevant = data.cold.rows, data.cold_columns, data.cold.relevant
    print(f"{len(cols)} pseudo-cold items, {len(rows)} users with a relevant one", flush=True)
    result = recall_model.train(pseudo, rm, vectors, recall_model.ModelSettings())
    print(f"two-tower on the pseudo-cold split: best epoch {result.best_epoch}, validation Recall@50 "
          f"{result.best_validation_recall:.4f}", flush=True)
    tower = two_tower.dense_scorer(result.model, recall_model.training_sequences(pseudo, rm), len(rm.user_ids))(rows)[:, cols]
    features = text_cf.item_features(vectors)
    textcf = text_cf.fit(rm.matrix, features, 0.03, 0.5).user_queries(rm.matrix, features, rows) @ features[cols].T
    z_tower, z_text = standardised(np.asarray(tower, np.float64)), standardised(np.asarray(textcf, np.float64))
    n_rel = relevant_counts(relevant)
    for weight in WEIGHTS:
        scores = z_text + weight * z_tower
        lists, _ = top_k_scored(lambda block: scores[block], np.arange(len(rows)), COLD_K, len(cols))
        print(f"TextCF + {weight:>4} x two-tower: pseudo-cold Recall@20 "
              f"{float(recall_at_k(hit_matrix(lists, relevant), n_rel, COLD_K).mean()):.4f}", flush=True)
    lists, _ = top_k_scored(lambda block: z_tower[block], np.arange(len(rows)), COLD_K, len(cols))
    print(f"two-tower alone: pseudo-cold Recall@20 {float(recall_at_k(hit_matrix(lists, relevant), n_rel, COLD_K).mean()):.4f}")


if __name__ == "__main__":
    main()
