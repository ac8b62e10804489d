"""Probe: a time-aware item-to-item model (after TALE, WSDM'25) against the EASE route, on the
validation cut only (fit part -> held-out part; never the test split).

EASE reconstructs each item of a history from the others, all equal. The warm test is each
user's *next* 20%, so what matters is what tends to follow what: here the target side of the
closed form weighs each co-interaction pair by how close the two interactions are in the user's
sequence (``exp(-|place_i - place_j| / tau)``), optionally only "i before j". The solve keeps
EASE's Gram matrix: ``B = (X'X + lam I)^-1 C_tau`` with ``C_tau`` the weighted pair counts
(diagonal zero), which costs what EASE costs plus one pass over pairs within a window.

    .venv/bin/python -m bench.experiments.probe_sequential --home <bundled home>

Recorded run: bench/results/experiments/probe_sequential.txt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recall_pipeline.core.evaluation import baselines  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings  # noqa: E402

from bench.validation import read_split_and_embeddings, validation_cut  # noqa: E402


def pair_counts(rm, tau: float, window: int, directed: bool) -> sp.csr_matrix:
    """Weighted co-interaction counts of pairs at most ``window`` places apart in a user's history."""
    x = rm.matrix.tocsr()
    places = rm.recency.data  # aligned with x (same CSR structure)
    rows_i, rows_j, weights = [], [], []
    for u in range(x.shape[0]):
        start, end = x.indptr[u], x.indptr[u + 1]
        if end - start < 2:
            continue
        order = np.argsort(-places[start:end])  # oldest first
        seq = x.indices[start:end][order]
        n = len(seq)
        for d in range(1, min(window, n - 1) + 1):
            w = np.exp(-(d - 1) / tau) if tau > 0 else 1.0
            older, newer = seq[:-d], seq[d:]
            rows_i.append(older); rows_j.append(newer); weights.append(np.full(n - d, w))
            if not directed:
                rows_i.append(newer); rows_j.append(older); weights.append(np.full(n - d, w))
    c = sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows_i), np.concatenate(rows_j))),
                      shape=(x.shape[1], x.shape[1]))
    c.sum_duplicates()
    return c


def recall50(scores_fn, rm, holdout) -> float:
    return baselines.validation_recall(scores_fn, rm.matrix, holdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    args = parser.parse_args()
    split, ids, _ = read_split_and_embeddings(Path(args.home))
    rm, holdout, rows, relevant = validation_cut(split, ids)
    settings = RouteSettings()
    x = baselines.binary(rm.matrix)
    used = np.flatnonzero(np.diff(x.tocsc().indptr) > 0)
    xu = x[:, used].tocsr().astype(np.float64)
    gram = (xu.T @ xu).toarray()
    weighted = rm.recency_weighted(settings.ease_recency_tau, settings.ease_recency_floor)[:, used].tocsr()
    binary_hist = xu
    results = {}

    def score(b, hist):
        def scorer(r):
            out = np.full((len(r), x.shape[1]), -np.inf)
            out[:, used] = np.asarray(hist[r] @ b)
            return out
        return scorer

    for lam in (200.0,):
        p = np.linalg.inv(gram + lam * np.eye(len(used)))
        ease_b = -p / np.diag(p)[None, :]
        np.fill_diagonal(ease_b, 0.0)
        results[("ease", lam, "binary")] = recall50(score(ease_b, binary_hist), rm, holdout)
        results[("ease", lam, "recency")] = recall50(score(ease_b, weighted), rm, holdout)
        print(results, flush=True)
        def blend(b, beta):
            s_e = np.asarray(weighted[:50] @ ease_b).std()
            s_t = np.asarray(weighted[:50] @ b).std()
            return ease_b / s_e + beta * b / s_t

        # control: two EASE models of different strength blended (is any ensemble a gain?)
        for lam2 in (50.0, 1000.0):
            p2 = np.linalg.inv(gram + lam2 * np.eye(len(used)))
            e2 = -p2 / np.diag(p2)[None, :]
            np.fill_diagonal(e2, 0.0)
            for beta in (0.5, 1.0):
                print(f"control: ease 200 + {beta} x ease {lam2}: {recall50(score(blend(e2, beta), weighted), rm, holdout):.4f}", flush=True)
        for directed, tau, window in ((False, 1e9, 5), (False, 1e9, 20), (False, 1e9, 100), (False, 100.0, 300),
                                      (False, 30.0, 30), (True, 30.0, 91), (True, 1e9, 20)):
            c = pair_counts(rm, tau, window, directed)[used][:, used].toarray()
            b = p @ c
            for beta in (0.3, 0.5, 0.7):
                print(f"directed {directed} tau {tau} window {window}: blend {beta}: "
                      f"{recall50(score(blend(b, beta), weighted), rm, holdout):.4f}", flush=True)

if __name__ == "__main__":
    main()
