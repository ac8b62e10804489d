"""Index types over large catalogues with the structure of real embeddings.

Catalogues of 100k and 1M 384-dim vectors are drawn around the real all-MiniLM-L6-v2
embeddings of the bundled items (a real item's vector plus Gaussian noise, renormalised), and
queries around the real user profiles of the bundled data (the pipeline's mean-embedding
profiles, plus noise). Uniformly random vectors have no neighbourhoods and make every ANN index
look broken, so they prove nothing. For each size, every index type is built with the
pipeline's default settings (``IndexSettings``) and timed; recall@100 is measured against the
exact search of the same run, and queries per second are compared with it.

    .venv/bin/python -m bench.perf.index_benchmark [--sizes 100000 1000000] [--queries 1000]

Recorded runs: bench/results/perf/index_benchmark_100k_1m_run1.txt, index_benchmark_1m_run2.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.recall.index import IndexSettings, build_index  # noqa: E402
from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions  # noqa: E402
from recall_pipeline.core.ingest.item_text import clean_items  # noqa: E402
from recall_pipeline.core.features.user_profiles import build_user_profiles  # noqa: E402
from recall_pipeline.core.ingest.sources import load_bundled  # noqa: E402
from recall_pipeline.core.features.split import split_interactions  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / ".cache"  # bench/.cache, which git ignores
K = 100


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(item embeddings, user profiles) of the bundled data, cached between runs."""
    encoder = TextEncoder()
    cache = CACHE / f"bundled_{encoder.identity.key().replace('@', '_')}.npz"
    if cache.exists():
        stored = np.load(cache)
        return stored["items"], stored["users"]
    raw_interactions, raw_items = load_bundled("bench")
    items, _ = clean_items(raw_items)
    items = items.sort("item_id")
    clean, _ = clean_interactions(raw_interactions, items["item_id"], CleaningRules(), datetime.now())
    split = split_interactions(clean)
    item_vectors = encoder.encode(items["item_text"].to_list(), progress=True)
    profiles = build_user_profiles(split.filter(pl.col("part") == "train"),
                                   items["item_id"].to_numpy(), item_vectors)
    CACHE.mkdir(exist_ok=True)
    np.savez(cache, items=item_vectors, users=profiles.vectors)
    return item_vectors, profiles.vectors


def around(real: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors, each a random real vector plus noise of norm about ``noise``."""
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    sigma = noise / np.sqrt(real.shape[1])
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        parents = rng.integers(len(real), size=stop - start)
        chunk = real[parents] + rng.normal(0.0, sigma, (stop - start, real.shape[1])).astype(np.float32)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def one_by_one_qps(index, queries: np.ndarray) -> float:
    """Queries per second when each query is searched alone, as an online request would be."""
    sample = queries[:200]
    start = time.perf_counter()
    for query in sample:
        index.search(query[None, :], K)
    return len(sample) / (time.perf_counter() - start)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the noise added to a real vector")
    args = parser.parse_args()
    items, users = real_vectors()
    nn = np.sort(items @ items[:2000].T, axis=0)[-2]  # each item's closest other real item
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads, {datetime.now():%Y-%m-%d}")
    print(f"real data: {len(items)} MiniLM item vectors (median cosine to the nearest other item "
          f"{np.median(nn):.3f}), {len(users)} user profiles; noise norm {args.noise}")
    settings = IndexSettings()
    rng = np.random.default_rng(0)
    queries = around(users, args.queries, args.noise, rng)
    print("QPS: batch = all queries in one search call (the nightly recall); single = one query per "
          "call (an online request)")
    print(f"\n{'items':>9} {'index':<6} {'params':<50} {'build s':>8} {'MB':>7} {'batch QPS':>10} "
          f"{'x exact':>8} {'single QPS':>10} {'x exact':>8} {'recall@100':>10}")
    for n in args.sizes:
        catalogue = around(items, n, args.noise, rng)
        near = np.sort((catalogue[:1000] @ catalogue[1000:21000].T), axis=1)[:, -1]
        truth = None
        exact_qps = None
        for kind in ("flat", "hnsw", "ivf"):
            (index, params), build_s = timed(lambda: build_index(catalogue, kind, settings))
            size_mb = faiss.serialize_index(index).nbytes / 2**20
            (scores, found), search_s = timed(lambda: index.search(queries, K))
            qps = len(queries) / search_s
            single = one_by_one_qps(index, queries)
            if kind == "flat":
                truth, exact_qps, exact_single = found, qps, single
            recall = recall_at_k(found, truth)
            print(f"{n:>9,} {kind:<6} {str(params):<50} {build_s:>8.1f} {size_mb:>7.0f} {qps:>10.0f} "
                  f"{qps / exact_qps:>7.1f}x {single:>10.0f} {single / exact_single:>7.1f}x "
                  f"{recall:>10.4f}", flush=True)
            sweep = {"hnsw": ("efSearch", (128, 512, 1024, 2048)), "ivf": ("nprobe", (32, 128, 256))}
            if kind in sweep:
                name, values = sweep[kind]
                for value in values:
                    faiss.ParameterSpace().set_index_parameter(index, name, value)
                    (_, found_v), s = timed(lambda: index.search(queries, K))
                    one = one_by_one_qps(index, queries)
                    print(f"{'':>9} {'':<6} {f'  {name}={value}':<50} {'':>8} {'':>7} "
                          f"{len(queries) / s:>10.0f} {len(queries) / s / exact_qps:>7.1f}x "
                          f"{one:>10.0f} {one / exact_single:>7.1f}x "
                          f"{recall_at_k(found_v, truth):>10.4f}", flush=True)
            index = None  # freed before the next index is built
        print(f"{'':>9} (sample of the synthetic catalogue: median cosine to the nearest of 20k "
              f"others {np.median(near):.3f})", flush=True)


if __name__ == "__main__":
    main()
