"""Probe: does the validation cut predict the two-tower route's place against plain EASE where
the lists are served? (the test split is never read)

The fusion is chosen on the validation cut: each route trained on the training part's fit part
and judged on its held-out part. The lists are served by models that saw all of training: plain
EASE solved again, the two-tower model trained one more pass (``refit`` "continue"). If one of
them gains more than the other from that newest fifth of each history, the cut misjudges their
places. On the generator's S catalogue the two-tower route led plain EASE by +0.0025 on the
validation cut and trailed it by 0.0357 on the test split. Reading the test split would answer
nothing a run may use, so the probe moves one cut down, as ``probe_train_once`` does: the fit
part plays "training" and is cut again by the protocol's rule 2, and the real held-out part,
which no model here saw, plays the test split. Both routes are built as the pipeline builds
them (plain EASE at its best regularisation on the inner cut over the baselines' grid; the
two-tower model with the run's settings, early-stopped on the inner cut, then refit):

- ``chosen on``: each route from the inner fit part, judged on the inner held-out part (what
  ``route_settings`` sees, one cut down);
- ``inner models``: the same models, the histories the whole fit part, judged on the real
  held-out part (the newest interactions in the histories, not in the models);
- ``served``: plain EASE solved on the whole fit part, the two-tower model refit on it, judged
  on the real held-out part (what the test split sees, one cut down).

Each row: both routes' Recall@50 and the two-tower route's lead with its two-sided 90% bounds
(paired bootstrap over users); then what each route gains from the newest interactions.

    .venv/bin/python -m bench.experiments.probe_validation_gap --home <home a full run filled> [--refit full]

Recorded runs: bench/results/experiments/probe_validation_gap.txt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recall_pipeline.core.evaluation.baselines import tune  # noqa: E402
from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.evaluation.protocol import EASE_GRID, validation_matrices  # noqa: E402
from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.recall.route_selection import paired_gain  # noqa: E402
from recall_pipeline.core.training import recall_model  # noqa: E402
from recall_pipeline.core.training.ease.model import ease_maker, fit_ease  # noqa: E402
from recall_pipeline.core.training.two_tower.serving import dense_scorer  # noqa: E402

from bench.experiments.probe_train_once import inner_split  # noqa: E402
from bench.validation import read_split_and_embeddings  # noqa: E402


def per_user_recall(scorer, seen: sp.csr_matrix, relevant: sp.csr_matrix, seed: int) -> np.ndarray:
    """Recall@50 of each user with a relevant item in ``relevant``, ``seen`` left out."""
    rows = np.flatnonzero(relevant_counts(relevant))
    lists, _ = top_k_scored(scorer, rows, 50, seen.shape[1], seen, seed)
    return recall_at_k(hit_matrix(lists, relevant[rows]), relevant_counts(relevant[rows]), 50)


def lead(two_tower: np.ndarray, ease: np.ndarray) -> str:
    """The two-tower route's mean lead over EASE and its two-sided 90% bootstrap bounds."""
    gain, lower = paired_gain(two_tower, ease)
    _, upper = paired_gain(ease, two_tower)
    return f"{two_tower.mean():.4f} {ease.mean():.4f} {gain:+.4f} [{lower:+.4f}, {-upper:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a home folder a full run has filled")
    parser.add_argument("--refit", default="continue", help="the two-tower refit to serve: continue or full")
    parser.add_argument("--refit-epochs", type=int, default=1, help="passes of the refit 'continue'")
    args = parser.parse_args()
    split, ids, vectors = read_split_and_embeddings(args.home)
    rm = build_rating_matrix(split, ids)
    fit, holdout = validation_matrices(split, rm)  # the real cut: "training" and its judge
    inner = inner_split(split)
    inner_fit, inner_holdout = validation_matrices(inner, rm)
    settings = recall_model.settings_from({"refit": args.refit, "refit_epochs": args.refit_epochs})
    seed = settings.training.seed

    lam = tune(ease_maker(), EASE_GRID, inner_fit, inner_holdout, seed).value
    ease_inner, ease_served = fit_ease(inner_fit, lam)[1], fit_ease(fit, lam)[1]
    result = recall_model.train(inner, rm, vectors, settings)
    inner_seq = recall_model.fit_sequences(inner, rm)
    fit_seq = recall_model.fit_sequences(split, rm)
    users = len(rm.user_ids)
    rows = {
        "chosen on": (per_user_recall(dense_scorer(result.validation_model, inner_seq, users), inner_fit, inner_holdout, seed),
                      per_user_recall(ease_inner.scorer(inner_fit), inner_fit, inner_holdout, seed)),
        "inner models": (per_user_recall(dense_scorer(result.validation_model, fit_seq, users), fit, holdout, seed),
                         per_user_recall(ease_inner.scorer(fit), fit, holdout, seed)),
        "served": (per_user_recall(dense_scorer(result.model, fit_seq, users), fit, holdout, seed),
                   per_user_recall(ease_served.scorer(fit), fit, holdout, seed)),
    }
    print(f"inner fit {inner_fit.nnz} interactions, inner held out {inner_holdout.nnz} "
          f"({int((relevant_counts(inner_holdout) > 0).sum())} users judged); the real held-out part "
          f"judges {int((relevant_counts(holdout) > 0).sum())} users; plain EASE lambda {lam:g} on the inner cut; "
          f"two-tower best epoch {result.best_epoch}, refit {args.refit} ({args.refit_epochs} pass(es) if continue), "
          f"served model {result.served}")
    print(f"{'':<13} {'2-tower':>7} {'EASE':>6} {'lead':>7} {'90% bounds':>18}")
    for name, (two_tower, ease) in rows.items():
        print(f"{name:<13} {lead(two_tower, ease)}")
    for route, index in (("two-tower", 0), ("EASE", 1)):
        gain, lower = paired_gain(rows["served"][index], rows["inner models"][index])
        print(f"{route} from the newest interactions in the model: {gain:+.4f} (lower 95% bound {lower:+.4f})")


if __name__ == "__main__":
    main()
