"""Size is part of correctness: recall and evaluation on a shape whose dense users x items
score matrix would take 1.9 GB (float64) run in a subprocess whose peak RSS stays far below it.

The subprocess runs the real code paths a run takes at scale: the protocol's split and rating
matrix, the FAISS routes and the dense routes (EASE over its capped item set), their fusion,
then the evaluation's lists for the published lists, each route and the tuned baselines, and
a validation figure as the champion rule computes it. A users x items array anywhere on those paths breaks the ceiling."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

USERS, ITEMS = 8_000, 30_000
# a users x items array alone is 1,920 MB in float64, 960 MB in float32
CEILING_BYTES = 1_000 * 2**20

PROBE = textwrap.dedent(f"""
    import json
    import numpy as np, polars as pl
    from recall_pipeline.core.evaluation import baselines
    from recall_pipeline.core.training.ease import model as ease
    from recall_pipeline.core.evaluation.protocol import (
        build_evaluation_data, list_metrics, run_baselines, scorer_lists, validation_matrices)
    from recall_pipeline.core.features.rating_matrix import build_rating_matrix
    from recall_pipeline.core.features.split import split_interactions
    from recall_pipeline.core.features.user_profiles import profile_scorer
    from recall_pipeline.core.recall.index import build_exact_index
    from recall_pipeline.core.recall.routes import RouteSettings, merge_routes, route_lists

    # the caps' mechanisms, at a size a test can afford: EASE over the top items, sparse ItemKNN
    ease.EASE_MAX_ITEMS = 1_500
    baselines.KNN_MAX_DENSE_BYTES = 64 * 2**20
    rng = np.random.default_rng(0)
    users, items = {USERS}, {ITEMS}
    per_user = rng.integers(5, 40, users)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    item = rng.choice(items, per_user.sum(), p=popularity / popularity.sum())
    clean = pl.DataFrame({{"user_id": np.repeat(np.arange(users), per_user), "item_id": item,
                          "rating": rng.integers(1, 11, per_user.sum()) / 2.0,
                          "timestamp": rng.integers(0, 10**9, per_user.sum())}}).unique(["user_id", "item_id"])
    clean = clean.with_columns(pl.from_epoch("timestamp"))
    split = split_interactions(clean)
    rm = build_rating_matrix(split, np.arange(items))
    vectors = rng.normal(size=(items, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    profiles = rng.normal(size=(users, 16)).astype(np.float32)
    settings = RouteSettings(depth=100, ease_max_items=1500, compute_zero_weight_routes=True)  # every route
    lists = route_lists(build_exact_index(vectors), np.arange(items), rm, rm.user_ids, profiles,
                        np.zeros(0, np.int64), np.zeros((0, 16), np.float32), settings)
    merged = merge_routes(lists, vectors, 100, settings, train_counts=np.diff(rm.matrix.tocsc().indptr))
    data = build_evaluation_data(split, rm, item_vectors=vectors)
    rows = list_metrics("final", data, merged.items[data.warm.rows], None)
    lm_profile = profile_scorer(profiles, vectors)
    rows += list_metrics("route:lm_profile", data, *scorer_lists(lm_profile, data))
    for result in run_baselines(split, data, ease_grid=(200.0,), knn_grid=(50,)):
        rows += list_metrics(result.name, data, result.warm_lists, result.cold_lists)
    fit, holdout = validation_matrices(split, rm)   # what the champion rule scores on
    champion_figure = baselines.validation_recall(lm_profile, fit, holdout)
    # VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's across exec)
    peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
    recall = {{r["model"]: r["value"] for r in rows if (r["slice"], r["metric"], r["k"]) == ("warm", "recall", 50)}}
    print(json.dumps({{"peak": peak, "recall": recall, "warm_users": len(data.warm.rows),
                      "champion_figure": champion_figure, "shape": list(rm.matrix.shape)}}))
""")


def test_recall_and_evaluation_never_build_a_users_by_items_array():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [USERS, ITEMS]
    assert result["peak"] < CEILING_BYTES, f"peak RSS {result['peak'] / 2**20:.0f} MB"
    # the figures are real: every model found something, and CF beats random profiles
    assert result["warm_users"] > 3_000
    assert set(result["recall"]) == {"final", "route:lm_profile", "MostPopular", "ItemKNN", "EASE"}
    assert result["recall"]["MostPopular"] > result["recall"]["route:lm_profile"] > 0
