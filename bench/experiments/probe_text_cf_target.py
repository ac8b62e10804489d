"""Probe: TextCF fitted to a smoothed target, on pseudo-cold validation only (the protocol's rule
4: 10% of the training items held out with their interactions; never the cold test items).

TextCF's ``W`` reconstructs the binary history ``D^-alpha X`` from the history's text features.
A user's binary row is a noisy sample of what they like; EASE's reconstruction ``X B`` (fitted on
the same fit part) is a smoothed one, closer to what a model of text can hope to predict. Here the
target is ``D^-alpha X (I + beta B / s)`` (``s`` scales B's scores to X's spread): beta 0 is TextCF
as published. The normal equations keep their closed form: ``C W G + lam W = R`` with
``R = A' Y F`` instead of ``C``.

    .venv/bin/python -m bench.experiments.probe_text_cf_target --home <bundled home>

Recorded run: bench/results/experiments/probe_text_cf_target.txt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recall_pipeline.core.evaluation import baselines  # noqa: E402
from recall_pipeline.core.training import text_cf  # noqa: E402

from bench.validation import read_split_and_embeddings  # noqa: E402

LAMBDAS = (0.01, 0.03, 0.1)
BETAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def fit_to(train: sp.csr_matrix, features: np.ndarray, lam: float, alpha: float, target: np.ndarray) -> text_cf.TextCF:
    """TextCF's closed form with ``R = A' target F`` (target: users x items, already D^-alpha-scaled)."""
    history = text_cf.history_features(train, features, alpha)
    c = history.T @ history
    trained = np.asarray(features[np.diff(sp.csc_matrix(train).indptr) > 0], dtype=np.float64)
    g = trained.T @ trained
    r = history.T @ (target @ np.asarray(features, dtype=np.float64))
    s, u = np.linalg.eigh(c)
    gs, v = np.linalg.eigh(g)
    s, gs = np.clip(s, 0.0, None), np.clip(gs, 0.0, None)
    scale = lam * max(s.mean(), 1e-12) * max(gs.mean(), 1e-12)
    m = (u.T @ r @ v) / (s[:, None] * gs[None, :] + scale)
    return text_cf.TextCF(u @ m @ v.T, float(lam), float(alpha))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    args = parser.parse_args()
    split, ids, vectors = read_split_and_embeddings(Path(args.home))
    features = text_cf.item_features(vectors)
    fit_matrix, judge = text_cf.pseudo_cold_judge(split, ids, features)
    x = baselines.binary(fit_matrix)
    xb = baselines.fit_ease(fit_matrix, 200.0)[1].scores(x)
    dense = x.toarray()
    xb *= dense.std() / xb.std()
    lengths = np.maximum(np.diff(x.indptr), 1).astype(np.float64)[:, None]
    for alpha in (0.0, 0.5):
        for beta in BETAS:
            target = (dense + beta * xb) / lengths ** alpha
            for lam in LAMBDAS:
                print(f"alpha {alpha} beta {beta:>3} lambda {lam:>5}: pseudo-cold Recall@20 "
                      f"{judge(fit_to(fit_matrix, features, lam, alpha, target)):.4f}", flush=True)
    print(f"published TextCF at lambda 0.03, alpha 0.5: {judge(text_cf.fit(fit_matrix, features, 0.03, 0.5)):.4f}")


if __name__ == "__main__":
    main()
