"""What the TextCF route's exact index saves against scoring every cold item a block at a time,
and what an approximate (HNSW) index would save and lose.

A synthetic catalogue: clustered unit vectors (as LM embeddings group by topic), ``--trained``
items with Zipf-popular training interactions and ``--cold`` items without any (the route's
candidates: those, and the trained items no sampled interaction reached), TextCF fitted on the
training matrix. The same users are ranked by ``routes.text_cf_lists`` three ways: scoring
every cold item (the reference), the route's exact FAISS index (what a recall of
``routes.INDEXED_MIN_USERS`` users or more searches), and an HNSW index (``IndexSettings``
defaults, as the LM index above 200,000 items, at each ``--ef-search``; not what the route
uses). Printed: each index's build time, each ranking's time per user, what 200,000 users
would cost, and how much of each user's exact top 50 each index finds.

    .venv/bin/python -m bench.perf.text_cf_index [--cold 284879] [--trained 100000] [--users 2000]
        [--ef-search 1024 4096]

Recorded run: bench/results/perf/text_cf_index.txt.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from datetime import datetime, timezone

import numpy as np
import scipy.sparse as sp


def clustered_unit_vectors(n: int, dims: int, rng: np.random.Generator, clusters: int = 500) -> np.ndarray:
    centres = rng.normal(size=(clusters, dims)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def training_matrix(n_users: int, trained: int, n_items: int, rng: np.random.Generator) -> sp.csr_matrix:
    lengths = rng.integers(5, 80, n_users)
    popularity = 1.0 / np.arange(1, trained + 1) ** 0.9
    items = rng.choice(trained, lengths.sum(), p=popularity / popularity.sum())
    matrix = sp.csr_matrix((np.full(len(items), 4.0), (np.repeat(np.arange(n_users), lengths), items)),
                           shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=284_879, help="items without interactions (L's count)")
    parser.add_argument("--trained", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000, help="users ranked both ways")
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[1024, 4096], help="HNSW search widths tried")
    args = parser.parse_args()

    import faiss

    from recall_pipeline.core.recall import routes
    from recall_pipeline.core.recall.index import IndexSettings, build_index
    from recall_pipeline.core.training import text_cf

    rng = np.random.default_rng(0)
    n_items = args.trained + args.cold
    vectors = clustered_unit_vectors(n_items, args.dims, rng)
    features, item_ids = text_cf.item_features(vectors), np.arange(n_items)
    train = training_matrix(max(args.users, 5_000), args.trained, n_items, rng)
    model = text_cf.fit_for_serving(train, item_ids, features, 0.003, 0.0, "bench")
    rows = np.arange(args.users)

    scored = routes.TextCFRoute.build(model, features, item_ids)
    start = time.perf_counter()
    exact = routes.text_cf_lists(scored, train, rows, 50)
    scoring = time.perf_counter() - start
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{len(scored.candidates):,} cold items x {features.shape[1]} features, {args.users:,} users")
    print(f"scoring every cold item: {scoring:.1f} s ({1000 * scoring / args.users:.2f} ms a user)")
    for name, kind, searches in (("exact index (served)", "flat", [0]), ("HNSW index (not used)", "hnsw", args.ef_search)):
        start = time.perf_counter()
        index = build_index(features[scored.candidates], kind, IndexSettings())[0]
        build = time.perf_counter() - start
        for ef in searches:
            if ef:
                faiss.downcast_index(index.index).hnsw.efSearch = ef
            route = dataclasses.replace(scored, index=index)
            start = time.perf_counter()
            found = routes.text_cf_lists(route, train, rows, 50)
            search = time.perf_counter() - start
            overlap = np.mean([len(np.intersect1d(a[a >= 0], b[b >= 0])) / max((a >= 0).sum(), 1)
                               for a, b in zip(exact, found)])
            print(f"{name}{f', efSearch {ef}' if ef else ''}: built in {build:.1f} s, searched in {search:.1f} s "
                  f"({1000 * search / args.users:.2f} ms a user, {scoring / search:.1f}x faster than scoring); "
                  f"200,000 users: {build + 200_000 * search / args.users:,.0f} s against "
                  f"{200_000 * scoring / args.users:,.0f} s scored; the exact top 50 found: {overlap:.4f}, "
                  f"lists equal entry for entry: {(found == exact).mean():.4f}")


if __name__ == "__main__":
    main()
