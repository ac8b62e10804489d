"""Probe: a small learned ranker over the routes' ranks instead of weighted reciprocal-rank fusion,
on the validation cut only (fit part -> held-out part; never the test split).

The routes (two-tower validation-phase model, EASE route with its windowed term) are built on
the fit part as ``bench.tuning.tune_fusion`` builds them. Candidates: the union of both routes' top 200.
Features per (user, candidate): each route's reciprocal rank (0: absent), whether it proposed
the item, log training popularity, the user's history length. The ranker is fitted on half the
validation users and scored on the other half (2 folds, seeded), against the reciprocal-rank
fusion at the current defaults on the same users, both without MMR (the ranking alone) and with.

    .venv/bin/python -m bench.experiments.probe_learned_fusion --home <bundled home>

The rankers are scikit-learn's, which the pipeline does not need: ``pip install -e '.[bench]'``.

Recorded run: bench/results/experiments/probe_learned_fusion.txt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.recall.fusion import mmr  # noqa: E402
from recall_pipeline.core.recall.index import build_exact_index  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings, merge_routes, route_lists  # noqa: E402

from bench.validation import read_split_and_embeddings, validation_cut, validation_model_route  # noqa: E402

CACHE = Path("/tmp/probe_learned_fusion_lists.npz")


def route_lists_on_fit(home: Path):
    split, ids, vectors = read_split_and_embeddings(home)
    rm, holdout, rows, relevant = validation_cut(split, ids)
    if CACHE.exists():
        cached = np.load(CACHE)
        return rm, vectors, rows, relevant, {"two_tower": cached["two_tower"], "ease": cached["ease"]}
    fit_rows = split.filter(pl.col("val_part") == "fit").select("user_id", "item_id", "rating", "timestamp")
    model_route = validation_model_route(fit_rows, rm, ids, vectors, holdout)
    empty = np.zeros((0, vectors.shape[1]), np.float32)
    lists = route_lists(build_exact_index(vectors), ids, rm, np.zeros(0, ids.dtype), empty, np.zeros(0, ids.dtype),
                        empty, RouteSettings(), model_route)
    np.savez(CACHE, two_tower=lists["two_tower"], ease=lists["ease"])
    return rm, vectors, rows, relevant, {"two_tower": lists["two_tower"], "ease": lists["ease"]}


def candidate_frame(lists, users, counts, lengths, relevant=None):
    """(user slot, item, features, label) over the union of both routes' lists of ``users``."""
    tt, ease = lists["two_tower"][users], lists["ease"][users]
    depth = tt.shape[1]
    out_u, out_i, feats, labels = [], [], [], []
    for slot in range(len(users)):
        rank_tt = {item: r + 1 for r, item in enumerate(tt[slot]) if item >= 0}
        rank_e = {item: r + 1 for r, item in enumerate(ease[slot]) if item >= 0}
        items = np.array(sorted(set(rank_tt) | set(rank_e)))
        rt = np.array([rank_tt.get(i, 0) for i in items], float)
        re = np.array([rank_e.get(i, 0) for i in items], float)
        f = np.column_stack([
            np.where(rt > 0, 1 / (60 + rt), 0), np.where(re > 0, 1 / (60 + re), 0),
            np.log(np.where(rt > 0, rt, 2 * depth)), np.log(np.where(re > 0, re, 2 * depth)),
            rt > 0, re > 0, np.log1p(counts[items]), np.full(len(items), np.log1p(lengths[users[slot]])),
        ])
        out_u.append(np.full(len(items), slot)); out_i.append(items); feats.append(f)
        if relevant is not None:
            labels.append(np.asarray(relevant[slot, items].todense()).ravel() > 0)
    return (np.concatenate(out_u), np.concatenate(out_i), np.vstack(feats),
            np.concatenate(labels) if labels else None)


def ranked_lists(slots, items, scores, n_users, k):
    lists = np.full((n_users, k), -1, np.int64)
    vals = np.full((n_users, k), -np.inf, np.float32)
    order = np.lexsort((-scores, slots))
    slots, items, scores = slots[order], items[order], scores[order]
    starts = np.searchsorted(slots, np.arange(n_users))
    ends = np.searchsorted(slots, np.arange(n_users), side="right")
    for u in range(n_users):
        n = min(k, ends[u] - starts[u])
        lists[u, :n] = items[starts[u]:starts[u] + n]
        vals[u, :n] = scores[starts[u]:starts[u] + n]
    return lists, vals


def rankers() -> tuple:
    """The two rankers' classes, (logistic regression, gradient-boosted trees), from scikit-learn:
    the optional extra ``bench``, so a missing install stops the probe before any work."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise SystemExit(f"this probe needs scikit-learn ({exc}); install the bench extra: "
                         "pip install -e '.[bench]'") from exc
    return LogisticRegression, HistGradientBoostingClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    args = parser.parse_args()
    LogisticRegression, HistGradientBoostingClassifier = rankers()
    rm, vectors, rows, relevant, lists = route_lists_on_fit(Path(args.home))
    counts = np.diff(rm.matrix.tocsc().indptr).astype(float)
    lengths = np.diff(rm.matrix.indptr).astype(float)
    settings = RouteSettings()
    n_rel = relevant_counts(relevant)
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(rows)) % 2
    fused_mmr = merge_routes(lists, vectors, 100, settings, counts).items[rows]
    fused_plain = merge_routes(lists, vectors, 100, RouteSettings(mmr_lambda=1.0), counts).items[rows]
    results = {name: np.zeros(len(rows)) for name in ("rrf", "rrf+mmr", "lr", "lr+mmr", "gbdt", "gbdt+mmr")}
    results["rrf"] = recall_at_k(hit_matrix(fused_plain, relevant), n_rel, 50)
    results["rrf+mmr"] = recall_at_k(hit_matrix(fused_mmr, relevant), n_rel, 50)
    for test_fold in (0, 1):
        train_users, test_users = np.flatnonzero(fold != test_fold), np.flatnonzero(fold == test_fold)
        _, _, x_tr, y_tr = candidate_frame(lists, rows[train_users], counts, lengths, relevant[train_users])
        s_te, i_te, x_te, _ = candidate_frame(lists, rows[test_users], counts, lengths)
        for name, model in (("lr", LogisticRegression(max_iter=2000, C=1.0)),
                            ("gbdt", HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                                                    max_leaf_nodes=15, random_state=0))):
            model.fit(x_tr, y_tr)
            p = model.predict_proba(x_te)[:, 1]
            top, vals = ranked_lists(s_te, i_te, p, len(test_users), 200)
            results[name][test_users] = recall_at_k(hit_matrix(top[:, :100], relevant[test_users]), n_rel[test_users], 50)
            rer = mmr(top, vals, vectors, 100, settings.mmr_lambda)
            results[f"{name}+mmr"][test_users] = recall_at_k(hit_matrix(rer, relevant[test_users]), n_rel[test_users], 50)
            print(f"fold {test_fold} {name}: positives {int(y_tr.sum())} of {len(y_tr)} training rows", flush=True)
    for name, values in results.items():
        print(f"{name:>9}: validation Recall@50 {values.mean():.4f} (fold 0 {values[fold == 0].mean():.4f}, "
              f"fold 1 {values[fold == 1].mean():.4f})")


if __name__ == "__main__":
    main()
