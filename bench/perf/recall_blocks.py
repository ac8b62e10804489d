"""What one block of users costs in memory while ``recall_candidates`` recalls it, and so what
``BYTES_PER_LIST_SLOT`` (``core.recall.recall_candidates``) must be.

A synthetic catalogue (random unit vectors, Zipf popularity, every route with input: FAISS
profiles and interests, the two-tower index, EASE over its capped items, TextCF, popularity for
users without history) is built once per child process; the process's peak resident memory is
then reset (``/proc/self/clear_refs``) and one block of B users recalled. The peak above the
resident memory before the block, per list slot (B x depth x (routes + interests per user)),
is the figure; two block sizes give the slope, which leaves out what a block costs whatever its
size (tie orders and popularity over the catalogue, the recency-weighted matrix).

    .venv/bin/python -m bench.perf.recall_blocks [--items 100000] [--blocks 1000 4000]

Recorded run: bench/results/perf/recall_blocks.txt.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository: the children run as modules from it


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def synthetic_inputs(n_users: int, n_items: int, dims: int, interests: int, seed: int = 0):
    """RecallInputs with every route fed; the last 5% of users have no history."""
    import polars as pl

    from recall_pipeline.core.features.rating_matrix import RatingMatrix
    from recall_pipeline.core.recall.index import build_exact_index
    from recall_pipeline.core.recall.recall_candidates import RecallInputs
    from recall_pipeline.core.recall.routes import ModelRoute
    from recall_pipeline.core.training import text_cf
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    with_history = int(n_users * 0.95)
    lengths = rng.integers(5, 120, with_history)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, lengths.sum(), p=popularity / popularity.sum())
    users = np.repeat(np.arange(with_history), lengths)
    matrix = sp.csr_matrix((rng.integers(1, 6, len(items)).astype(np.float64), (users, items)),
                           shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.sort_indices()
    rm = RatingMatrix(matrix, np.arange(n_users), np.arange(n_items))
    vectors = rng.normal(size=(n_items, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = np.repeat(np.arange(with_history), interests)
    features = text_cf.item_features(vectors)
    model = text_cf.fit_for_serving(matrix, rm.item_ids, features, 0.03, 0.5, "bench")
    profiles = pl.DataFrame({"user_id": np.arange(with_history)}).with_columns(
        pl.Series("embedding", rng.normal(size=(with_history, dims)).astype(np.float32)))
    return RecallInputs(
        item_ids=rm.item_ids, item_vectors=vectors, encoder="bench", lm_index=build_exact_index(vectors),
        lm_index_type="flat", rm=rm, profiles=profiles, interest_owners=owners,
        interests=rng.normal(size=(len(owners), dims)).astype(np.float32),
        model_route=ModelRoute(build_exact_index(vectors[:, :32].copy()), np.arange(with_history),
                               rng.normal(size=(with_history, 32)).astype(np.float32)),
        model_key="bench/v1", item_counts=np.diff(matrix.tocsc().indptr), text_cf=model)


def child(block: int, n_items: int, dims: int, interests: int, depth: int) -> dict:
    """One block of ``block`` users in a fresh process: the peak above the resident memory."""
    import gc
    import time

    from recall_pipeline.core.recall.recall_candidates import recall_blocks
    from recall_pipeline.core.recall.routes import ROUTES, RouteSettings, fit_ease_route

    inputs = synthetic_inputs(block, n_items, dims, interests)
    settings = RouteSettings(depth=depth, compute_zero_weight_routes=True)  # every route: every slot counted
    ease = fit_ease_route(inputs.rm, settings)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident memory
    before = status_kib("VmRSS")
    start = time.perf_counter()
    blocks = list(recall_blocks(inputs, settings, 100, ease=ease, budget_bytes=2**62))
    seconds = time.perf_counter() - start
    assert len(blocks) == 1
    slots = block * depth * (len(ROUTES) + interests * 0.95)
    return {"block": block, "items": n_items, "peak_above_mb": (status_kib("VmHWM") - before) / 1024,
            "slots": slots, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--interests", type=int, default=5)
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--blocks", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.items, args.dims, args.interests, args.depth)))
        return
    from recall_pipeline.core.recall.recall_candidates import BYTES_PER_LIST_SLOT

    print(f"# {platform.node()}, {platform.processor() or platform.machine()}, items {args.items}, "
          f"dims {args.dims}, interests/user {args.interests}, depth {args.depth}")
    results = []
    for block in args.blocks:
        done = subprocess.run([sys.executable, "-m", __spec__.name, "--child", str(block), "--items", str(args.items),
                               "--dims", str(args.dims), "--interests", str(args.interests),
                               "--depth", str(args.depth)], cwd=ROOT, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    small, large = results[0], results[-1]
    slope = (large["peak_above_mb"] - small["peak_above_mb"]) * 2**20 / (large["slots"] - small["slots"])
    fixed = small["peak_above_mb"] - slope * small["slots"] / 2**20
    print(f"bytes per list slot (slope): {slope:.0f}; per block whatever its size: {fixed:.0f} MB; "
          f"BYTES_PER_LIST_SLOT in the code: {BYTES_PER_LIST_SLOT}")


if __name__ == "__main__":
    main()
