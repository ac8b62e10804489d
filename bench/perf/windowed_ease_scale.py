"""What the EASE route's windowed term costs at scale: EASE alone (the reference, same run) against
EASE with the term, on synthetic histories of ``--users`` users x ``--per-user`` interactions over
``--items`` items (Zipf popularity, so the capped solve keeps the popular items), each fit in a
fresh process so that its peak memory is its own.

    .venv/bin/python -m bench.perf.windowed_ease_scale --users 200000 --per-user 50 --items 1000000

Recorded run: bench/results/perf/windowed_ease_scale.txt.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[2]  # the repository: the children run as modules from it


def synthetic(users: int, per_user: int, items: int, seed: int = 0):
    from recall_pipeline.core.features.rating_matrix import RatingMatrix

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    cols = rng.choice(items, size=(users, per_user), p=weights / weights.sum())
    rows = np.repeat(np.arange(users), per_user)
    matrix = sp.csr_matrix((np.ones(users * per_user, np.float32), (rows, cols.ravel())), shape=(users, items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    recency = matrix.copy()  # a random order of each user's history: places 1..n
    counts = np.diff(matrix.indptr)
    recency.data = np.concatenate([rng.permutation(n) + 1.0 for n in counts]).astype(np.float32)
    return RatingMatrix(matrix, np.arange(users), np.arange(items), recency)


def one(args) -> dict:
    from recall_pipeline.core.training.ease import windowed as windowed_ease

    rm = synthetic(args.users, args.per_user, args.items)
    started = time.perf_counter()
    windowed_ease.fit(rm, 200.0, 5_000, args.window, args.weight)
    return {"seconds": time.perf_counter() - started,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "nnz": int(rm.matrix.nnz)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--weight", type=float, default=0.7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args)))
        return
    base = [sys.executable, "-m", __spec__.name, "--child", "--users", str(args.users), "--per-user", str(args.per_user),
            "--items", str(args.items)]
    runs = {}
    for name, extra in (("EASE alone", ["--weight", "0"]), (f"with window {args.window}", ["--window", str(args.window),
                                                                                               "--weight", str(args.weight)])):
        out = subprocess.run(base + extra, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        runs[name] = json.loads(out.strip().splitlines()[-1])
    reference = runs["EASE alone"]
    print(f"{args.users} users x {args.per_user} over {args.items} items ({reference['nnz']} interactions), EASE capped at 5,000 items")
    for name, run in runs.items():
        print(f"{name:>16}: {run['seconds']:7.1f} s ({run['seconds'] / reference['seconds']:.2f}x), "
              f"peak {run['peak_mib']:7.0f} MiB ({run['peak_mib'] / reference['peak_mib']:.2f}x; includes the synthetic data)")


if __name__ == "__main__":
    main()
