"""Probe: the EASE route's recency decay measured relative to the user's history length, on the
validation cut only (the test split is never read).

The route weighs a history entry ``floor + (1 - floor) * exp(-(place - 1) / tau)`` with one tau
(5 places) for everyone; the held-out part is each user's next 20%, which is 3 items for a user
with 15 and 200 for one with 1,000. With ``tau = max(tau_min, share x n_u)`` the decay stretches
with the history. Reported: the route alone and the fused lists at the defaults (as
``bench.experiments.probe_ease_knobs``), with coverage@50 and long tail@50, which the fusion rule must keep.

    .venv/bin/python -m bench.experiments.probe_relative_recency --home <bundled home> [--two-tower-cache F]

Recorded run: bench/results/experiments/probe_relative_recency.txt.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recall_pipeline.core.features.rating_matrix import aligned_recency  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings, ease_route, fit_ease_route  # noqa: E402

from bench.validation import probe_arguments, validation_fusion  # noqa: E402

SHARES = (0.01, 0.02, 0.05, 0.1)
TAU_MINS = (3.0, 5.0)


def relative_weights(rm, floor: float, tau_min: float, share: float) -> sp.csr_matrix:
    """The binary history weighted with a per-user tau of max(tau_min, share x history length)."""
    x = rm.matrix.tocsr()
    lengths = np.diff(x.indptr)
    tau = np.maximum(tau_min, share * lengths)
    per_entry = np.repeat(tau, lengths)
    data = floor + (1.0 - floor) * np.exp(-(aligned_recency(rm) - 1.0) / per_entry)
    return sp.csr_matrix((data, x.indices, x.indptr), shape=x.shape)


def main() -> None:
    args = probe_arguments(__doc__).parse_args()
    v = validation_fusion(args.home, args.two_tower_cache)
    defaults = RouteSettings()
    model = fit_ease_route(v.rm, defaults)
    assert model.columns is None  # the whole catalogue: the scorer below is the route's

    def report(name: str, ease: np.ndarray) -> None:
        alone = v.alone_at_50(ease)[0]
        recall, coverage, tail = v.fused_at_50({"ease": ease}, defaults.weights)
        print(f"{name:<40} route alone {alone:.4f}  fused {recall:.4f}  coverage@50 {coverage:.4f}  "
              f"long tail@50 {tail:.4f}", flush=True)

    published = np.full_like(v.two_tower, -1)
    published[v.every] = ease_route(v.rm, defaults, v.every, model)
    report("published: tau 5, floor 0.1", published)
    lengths = np.diff(v.rm.matrix.indptr)[v.rows]
    print(f"validation users' history lengths (fit part): median {int(np.median(lengths))}, "
          f"90th percentile {int(np.percentile(lengths, 90))}")
    for tau_min in TAU_MINS:
        for share in SHARES:
            weighted = relative_weights(v.rm, defaults.ease_recency_floor, tau_min, share)
            ease = np.full_like(v.two_tower, -1)
            ease[v.every], _ = top_k_scored(model.scorer(weighted, binarize=False), v.every, defaults.depth,
                                            len(v.ids), v.rm.matrix, defaults.seed)
            report(f"tau max({tau_min}, {share} x n), floor 0.1", ease)


if __name__ == "__main__":
    main()
