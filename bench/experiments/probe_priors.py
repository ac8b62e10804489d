"""Probes of three priors from the literature, on validation data only (the test split is never read).

Each probe asks whether an idea from the literature earns a place in the pipeline before any
of it is wired in:

1. Time-aware popularity (warm and sparse users): each user's prior is the items' interaction
   counts in a window of days ending at the user's last fit interaction (causal: only what had
   happened by then), alone and fused with the EASE route by weighted reciprocal rank. For
   reference only, the same window centred on that day (not causal: it counts other users'
   later interactions, which a production run does not have). Warm validation cut: fit /
   held-out part of training (Recall@50, all validation users and the sparse ones).
2. Cold items from their text neighbours (kNN transfer): a pseudo-cold item scores the user's
   EASE scores (or binary history) of its k nearest trained items in LM space, weighted by
   similarity^p; alone and z-score-fused with TextCF. Pseudo-cold validation (rule 4).
3. TextCF with more item features beside the unit LM vector and the constant: genre
   indicators and release-year buckets (metadata), or soft assignments to k-means clusters of
   the LM space (RBF features). Pseudo-cold validation, TextCF's own (lambda, alpha) grid.

    .venv/bin/python -m bench.experiments.probe_priors [--cache /tmp/probe_vectors.npy]

Recorded run: bench/results/experiments/probe_priors.txt.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.evaluation.protocol import COLD_K, build_evaluation_data  # noqa: E402
from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.features.split import pseudo_cold_split, split_interactions  # noqa: E402
from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions  # noqa: E402
from recall_pipeline.core.ingest.item_text import clean_items  # noqa: E402
from recall_pipeline.core.ingest.sources import load_bundled  # noqa: E402
from recall_pipeline.core.recall.fusion import reciprocal_rank_fusion  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings, ease_route_scorer  # noqa: E402
from recall_pipeline.core.training import text_cf  # noqa: E402

from bench.validation import validation_cut  # noqa: E402

WINDOWS_DAYS = (7, 30, 90, 365)
FUSION_WEIGHTS = (0.1, 0.3, 0.5, 1.0)
NEIGHBOURS = (10, 20, 50, 100)
YEAR_EDGES = np.array([1930, 1950, 1960, 1970, 1980, 1985, 1990, 1993, 1995, 1997, 1999, 2001, 2003, 2005,
                       2008, 2011, 2014])


def bundled(cache: Path | None):
    """The protocol's split of the bundled data, its items sorted by id, and their LM vectors."""
    raw, raw_items = load_bundled("probe")
    items = clean_items(raw_items)[0].sort("item_id")
    clean, _ = clean_interactions(raw, items["item_id"], CleaningRules(), datetime(2030, 1, 1))
    if cache is not None and cache.exists():
        vectors = np.load(cache)
    else:
        vectors = TextEncoder().encode(items["item_text"].to_list())
        if cache is not None:
            np.save(cache, vectors)
    return split_interactions(clean), items, np.asarray(vectors, dtype=np.float32)


def time_popularity(split: pl.DataFrame, ids: np.ndarray) -> None:
    rm, _, rows, relevant = validation_cut(split, ids)
    sparse = np.diff(rm.matrix.indptr)[rows] <= 30
    fit = split.filter(pl.col("val_part") == "fit")
    days = fit["timestamp"].dt.epoch("s").to_numpy().astype(np.float64) / 86400.0
    item = np.searchsorted(ids, fit["item_id"].to_numpy())
    user = np.searchsorted(rm.user_ids, fit["user_id"].to_numpy())
    last = np.full(len(rm.user_ids), -np.inf)
    np.maximum.at(last, user, days)
    order = np.argsort(days, kind="stable")
    days, item = days[order], item[order]

    def recall(lists: np.ndarray) -> str:
        r = recall_at_k(hit_matrix(lists[:, :50], relevant), relevant_counts(relevant), 50)
        return f"{r.mean():.4f} (sparse {r[sparse].mean():.4f})"

    def scorer(window: float, causal: bool):
        def scores(block: np.ndarray) -> np.ndarray:
            out = np.zeros((len(block), len(ids)))
            for j, u in enumerate(block):
                lo = np.searchsorted(days, last[u] - window)
                hi = np.searchsorted(days, last[u] + (0.0 if causal else window), side="right")
                np.add.at(out[j], item[lo:hi], 1.0)
            return out
        return scores

    ease, _ = top_k_scored(ease_route_scorer(rm, RouteSettings()), rows, 200, len(ids), rm.matrix)
    print(f"\n## 1. time-aware popularity: warm validation, {len(rows)} users ({sparse.sum()} sparse), Recall@50")
    print(f"EASE route (recency-weighted, as served): {recall(ease)}")
    for causal in (True, False):
        for window in WINDOWS_DAYS:
            lists, _ = top_k_scored(scorer(window, causal), rows, 200, len(ids), rm.matrix)
            fused = [f"w {w}: {recall(reciprocal_rank_fusion({'ease': ease, 'time': lists}, {'ease': 1.0, 'time': w}, 50, len(ids)).items)}"
                     for w in FUSION_WEIGHTS]
            kind = "causal" if causal else "centred (not causal)"
            print(f"{kind}, {window} days: alone {recall(lists)}; with EASE " + "; ".join(fused), flush=True)


def cold_probes(split: pl.DataFrame, items: pl.DataFrame, ids: np.ndarray, vectors: np.ndarray) -> None:
    pseudo = pseudo_cold_split(split.filter(pl.col("part") == "train"))
    rm = build_rating_matrix(pseudo, ids)
    data = build_evaluation_data(pseudo, rm)
    rows, cold, relevant = data.cold.rows, data.cold_columns, data.cold.relevant

    def recall(scores: np.ndarray) -> float:
        lists, _ = top_k_scored(lambda b: scores[b], np.arange(len(rows)), COLD_K, len(cold))
        return float(recall_at_k(hit_matrix(lists, relevant), relevant_counts(relevant), COLD_K).mean())

    base = text_cf.item_features(vectors)
    fit_matrix, judge = text_cf.pseudo_cold_judge(split, ids, base)
    tuned = text_cf.tune(fit_matrix, base, judge)
    model = text_cf.fit(rm.matrix, base, tuned.lam, tuned.alpha)
    textcf = model.scorer(rm.matrix, base)(rows)[:, cold]
    print(f"\n## 2. kNN transfer: pseudo-cold validation, {len(rows)} users, {len(cold)} items, Recall@20")
    print(f"TextCF (lambda {tuned.lam}, alpha {tuned.alpha}): {recall(textcf):.4f}")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    trained = np.flatnonzero(np.diff(rm.matrix.tocsc().indptr) > 0)
    sims = unit[cold] @ unit[trained].T   # pseudo-cold x trained items: small at this size only
    z = lambda s: (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-12)  # noqa: E731
    sources = {"EASE route": ease_route_scorer(rm, RouteSettings())(rows),
               "binary history": rm.matrix[rows].toarray() > 0}
    for name, user_scores in sources.items():
        user_scores = np.asarray(user_scores, dtype=np.float64)[:, trained]
        for k in NEIGHBOURS:
            for p in (1.0, 3.0):
                top = np.argpartition(-sims, k, axis=1)[:, :k]
                weights = np.zeros_like(sims)
                r = np.arange(len(sims))[:, None]
                weights[r, top] = np.maximum(sims[r, top], 0.0) ** p
                knn = user_scores @ weights.T
                fused = [f"{a}: {recall((1 - a) * z(textcf) + a * z(knn)):.4f}" for a in (0.3, 0.5)]
                print(f"{name}, k {k}, p {p}: alone {recall(knn):.4f}; with TextCF " + ", ".join(fused), flush=True)

    print("\n## 3. TextCF features: pseudo-cold Recall@20 at the best (lambda, alpha) of TextCF's grid")
    print(f"unit LM vector + constant (as served): {tuned.recall:.4f}")
    genres = sorted({g for names in items["genres"].to_list() for g in (names or [])})
    genre = np.array([[g in (names or []) for g in genres] for names in items["genres"].to_list()], dtype=np.float32)
    genre /= np.maximum(np.sqrt(genre.sum(1, keepdims=True)), 1.0)
    year = items["year"].cast(pl.Float64, strict=False).to_numpy()
    bucket = np.where(np.isnan(year), len(YEAR_EDGES) + 1, np.searchsorted(YEAR_EDGES, np.nan_to_num(year)))
    years = np.zeros((len(ids), len(YEAR_EDGES) + 2), dtype=np.float32)
    years[np.arange(len(ids)), bucket] = 1.0
    variants = {f"genres x{g}, years x{y}": np.hstack([base, g * genre, y * years])
                for g in (0.5, 1.0) for y in (0.0, 0.5, 1.0)}
    for k in (64, 256):
        means = faiss.Kmeans(unit.shape[1], k, niter=20, seed=1, spherical=True)
        means.train(unit.astype(np.float32))
        near = unit @ means.centroids.T
        for tau in (0.05, 0.1):
            soft = np.exp((near - near.max(1, keepdims=True)) / tau)
            soft /= soft.sum(1, keepdims=True)
            for s in (0.5, 1.0):
                variants[f"{k} clusters, tau {tau}, x{s}"] = np.hstack([base, s * soft])
    for name, features in variants.items():
        features = np.ascontiguousarray(features, dtype=np.float32)
        fit_matrix, judge = text_cf.pseudo_cold_judge(split, ids, features)
        result = text_cf.tune(fit_matrix, features, judge)
        print(f"{name}: {result.recall:.4f} (lambda {result.lam}, alpha {result.alpha})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="an .npy file for the item vectors (written if missing)")
    args = parser.parse_args()
    split, items, vectors = bundled(args.cache)
    ids = items["item_id"].to_numpy()
    time_popularity(split, ids)
    cold_probes(split, items, ids, vectors)


if __name__ == "__main__":
    main()
