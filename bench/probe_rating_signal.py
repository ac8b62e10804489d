"""Probe: the ratings themselves, on the validation cut only (the test split is never read).

The protocol's relevance is a rating of at least 4, and nothing in the fused lists reads a
rating: the EASE route weighs a history by recency alone, and the fusion discounts by
popularity alone. Two cheap uses, each a per-entry or per-item factor that scales to any size:
- *rated history*: the EASE route's history entries rated below 4 weigh ``gamma`` (1: as
  published), on top of the recency weights;
- *item quality prior*: the fused score times ``q_i ** beta``, ``q_i`` the item's smoothed share
  of fit ratings at least 4 (``(likes + 10 p0) / (count + 10)``, p0 the overall share).
The fused lists are the published ones at the defaults: the two-tower route of the validation
phase (trained on the fit part, early-stopped on the held-out part, not refit) and the EASE
route with its windowed term, reciprocal-rank fused with the popularity discount, MMR off.

    PYTHONPATH=. .venv/bin/python bench/probe_rating_signal.py --home <bundled home> [--two-tower-cache F]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from recall_pipeline.core.evaluation.metrics import head_items  # noqa: E402
from recall_pipeline.core.serving.fusion import reciprocal_rank_fusion  # noqa: E402
from recall_pipeline.core.serving.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.serving.routes import RouteSettings, fit_ease_route, popularity_weights  # noqa: E402
from tune_fusion import at_50, read_split_and_embeddings, two_tower_lists, validation_cut  # noqa: E402

GAMMAS = (1.0, 0.75, 0.5, 0.25)
BETAS = (0.0, 0.25, 0.5, 1.0, 2.0)
LIKED = 4.0
SMOOTHING = 10.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--two-tower-cache", default="", help="an .npy file keeping the two-tower lists between runs")
    args = parser.parse_args()
    split, ids, vectors = read_split_and_embeddings(Path(args.home))
    settings = RouteSettings()
    rm, holdout, rows, relevant = validation_cut(split, ids)
    two_tower = two_tower_lists(split, rm, ids, vectors, holdout, settings,
                                Path(args.two_tower_cache) if args.two_tower_cache else None)
    every = np.arange(len(rm.user_ids))
    model = fit_ease_route(rm, settings)
    counts = np.diff(rm.matrix.tocsc().indptr)
    head = head_items(counts, ids)
    likes = np.bincount(rm.matrix.indices[rm.matrix.data >= LIKED], minlength=len(ids))
    prior = likes.sum() / max(counts.sum(), 1)
    quality = (likes + SMOOTHING * prior) / (counts + SMOOTHING)
    print(f"validation: {len(rows)} users; fit ratings >= {LIKED}: {prior:.3f} of {counts.sum()}")
    print(f"{'gamma':>5} {'beta':>5} {'ease recall@50':>14} {'fused recall@50':>15} {'coverage@50':>11} {'long tail@50':>12}")
    for gamma in GAMMAS:
        weighted = rm.recency_weighted(settings.ease_recency_tau, settings.ease_recency_floor)
        weighted.data *= np.where(rm.matrix.data >= LIKED, 1.0, gamma)
        scorer = model.scorer(weighted, binarize=False)
        ease, _ = top_k_scored(scorer, every, settings.depth, len(ids), rm.matrix, settings.seed)
        ease_alone = at_50(ease[rows], relevant, len(ids), head)[0]
        for beta in BETAS:
            weights = popularity_weights(counts, settings.popularity_discount) * quality ** beta
            fused = reciprocal_rank_fusion({"two_tower": two_tower, "ease": ease}, settings.weights, 50, len(ids),
                                           settings.rrf_c, settings.seed, weights).items[rows]
            recall, coverage, tail = at_50(fused, relevant, len(ids), head)
            print(f"{gamma:>5} {beta:>5} {ease_alone:>14.4f} {recall:>15.4f} {coverage:>11.4f} {tail:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
