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

    .venv/bin/python -m bench.experiments.probe_rating_signal --home <bundled home> [--two-tower-cache F]

Recorded run: bench/results/experiments/probe_rating_signal.txt.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings, fit_ease_route  # noqa: E402

from bench.validation import probe_arguments, validation_fusion  # noqa: E402

GAMMAS = (1.0, 0.75, 0.5, 0.25)
BETAS = (0.0, 0.25, 0.5, 1.0, 2.0)
LIKED = 4.0
SMOOTHING = 10.0


def main() -> None:
    args = probe_arguments(__doc__).parse_args()
    v = validation_fusion(args.home, args.two_tower_cache)
    settings, rm = RouteSettings(), v.rm
    every = np.arange(len(rm.user_ids))
    model = fit_ease_route(rm, settings)
    likes = np.bincount(rm.matrix.indices[rm.matrix.data >= LIKED], minlength=len(v.ids))
    prior = likes.sum() / max(v.counts.sum(), 1)
    quality = (likes + SMOOTHING * prior) / (v.counts + SMOOTHING)
    print(f"validation: {len(v.rows)} users; fit ratings >= {LIKED}: {prior:.3f} of {v.counts.sum()}")
    print(f"{'gamma':>5} {'beta':>5} {'ease recall@50':>14} {'fused recall@50':>15} {'coverage@50':>11} {'long tail@50':>12}")
    for gamma in GAMMAS:
        weighted = rm.recency_weighted(settings.ease_recency_tau, settings.ease_recency_floor)
        weighted.data *= np.where(rm.matrix.data >= LIKED, 1.0, gamma)
        scorer = model.scorer(weighted, binarize=False)
        ease, _ = top_k_scored(scorer, every, settings.depth, len(v.ids), rm.matrix, settings.seed)
        ease_alone = v.alone_at_50(ease)[0]
        for beta in BETAS:
            recall, coverage, tail = v.fused_at_50({"ease": ease}, settings.weights, item_weights=v.weights * quality ** beta)
            print(f"{gamma:>5} {beta:>5} {ease_alone:>14.4f} {recall:>15.4f} {coverage:>11.4f} {tail:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
