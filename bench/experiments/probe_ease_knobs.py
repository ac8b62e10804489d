"""Probe: the knobs the last re-tunings held fixed, on the validation cut only (the test split is
never read): the EASE route's lambda and recency weighting were chosen before its windowed term
existed, and the fusion's reciprocal-rank constant ``c`` (60, the RRF paper's) was never tuned.
Each setting's fused validation Recall@50 (with coverage and long tail, which the fusion's
choice must keep), the rest at the defaults: the two-tower route of the validation phase
(trained on the fit part, early-stopped on the held-out part, not refit) and the EASE route,
reciprocal-rank fused with the popularity discount, MMR off.

    .venv/bin/python -m bench.experiments.probe_ease_knobs --home <bundled home> [--two-tower-cache F]

Recorded run: bench/results/experiments/probe_ease_knobs.txt.
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

from recall_pipeline.core.recall.routes import RouteSettings, ease_route, fit_ease_route  # noqa: E402

from bench.validation import probe_arguments, validation_fusion  # noqa: E402

LAMBDAS = (100.0, 200.0, 400.0)
RECENCY = ((5.0, 0.1), (3.0, 0.1), (10.0, 0.1), (5.0, 0.2), (5.0, 0.05))
RRF_CS = (15.0, 30.0, 60.0, 120.0)


def main() -> None:
    args = probe_arguments(__doc__).parse_args()
    v = validation_fusion(args.home, args.two_tower_cache)
    defaults = RouteSettings()
    print(f"validation: {len(v.rows)} users")
    print(f"{'lambda':>6} {'tau':>4} {'floor':>5} {'rrf c':>5} {'ease recall@50':>14} {'fused recall@50':>15} "
          f"{'coverage@50':>11} {'long tail@50':>12}")
    for lam in LAMBDAS:
        model = fit_ease_route(v.rm, replace(defaults, ease_lambda=lam))
        for tau, floor in RECENCY:
            settings = replace(defaults, ease_lambda=lam, ease_recency_tau=tau, ease_recency_floor=floor)
            ease = np.full_like(v.two_tower, -1)
            ease[v.every] = ease_route(v.rm, settings, v.every, model)
            alone = v.alone_at_50(ease)[0]
            for c in RRF_CS:
                recall, coverage, tail = v.fused_at_50({"ease": ease}, settings.weights, c)
                print(f"{lam:>6} {tau:>4} {floor:>5} {c:>5} {alone:>14.4f} {recall:>15.4f} {coverage:>11.4f} "
                      f"{tail:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
