"""The FAISS item index: built over unit-norm item embeddings, searched by inner product.

The index type follows the catalogue size: exact search (``IndexFlatIP``) up to
``exact_max_items``, above it an approximate index: HNSW (the default: no training, high
recall) or IVF (smaller and faster to build on very large catalogues). Every type uses the
inner product the embeddings are compared by (an index on L2 would rank differently).

FAISS ids are positions in the sorted catalogue (``item_ids``), so any id type maps back through
the item index table. FAISS returns equal scores in an order of its own; the recall stage
re-orders them by the seeded tie rank (``ranking.order_ties``), never by item id. The index file
and its manifest are written atomically (temporary file, then rename); loading checks the
manifest against the embeddings it is asked to serve.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recall_pipeline.core.checksums import file_sha256

INDEX_FILE = "items.faiss"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class IndexSettings:
    """How the index is chosen and tuned; the defaults were set with ``bench/perf/index_benchmark.py``."""

    # The nightly recall searches all users in one batch, where exact search (BLAS) is hard to
    # beat on mid-sized catalogues; above the threshold HNSW trades a little recall for speed.
    # The figures behind both choices: bench/results/index_benchmark_*.txt.
    exact_max_items: int = 200_000
    approximate: str = "hnsw"          # "hnsw" or "ivf"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 1024
    ivf_lists: int = 0                 # 0: 4 * sqrt(n), at least 16
    ivf_probe: int = 64
    ivf_train_max: int = 200_000

    def choose(self, n_items: int) -> str:
        return "flat" if n_items <= self.exact_max_items else self.approximate


class IndexMismatchError(RuntimeError):
    """The stored index was built from other embeddings than the ones it should serve."""


@dataclass(frozen=True)
class IndexManifest:
    """What an index was built from and how; stored beside the index file."""

    model: str
    index_type: str
    params: dict
    count: int
    dims: int
    embeddings_sha256: str
    built_at: float
    build_seconds: float
    index_sha256: str = ""


def embeddings_digest(item_ids: np.ndarray, vectors: np.ndarray) -> str:
    """A checksum of the catalogue ids and their vectors."""
    digest = hashlib.sha256()
    digest.update(np.asarray(item_ids).astype(str).tobytes())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def build_exact_index(vectors: np.ndarray, seed: int = 0):
    """An exact inner-product index whose ids are row positions, added in a seeded order."""
    return build_index(vectors, "flat", IndexSettings(), seed)[0]


def _base_index(kind: str, vectors: np.ndarray, settings: IndexSettings, seed: int):
    """The bare FAISS index of ``kind`` (trained if it needs training) and its parameters."""
    import faiss

    n, dims = vectors.shape
    if kind == "flat":
        return faiss.IndexFlatIP(dims), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dims, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
        return index, {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction,
                       "efSearch": settings.hnsw_ef_search}
    if kind == "ivf":
        lists = settings.ivf_lists or max(16, int(4 * np.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).permutation(n)[: max(settings.ivf_train_max, 39 * lists)]
        index.train(vectors[np.sort(sample)])
        index.nprobe = min(settings.ivf_probe, lists)
        return index, {"nlist": lists, "nprobe": index.nprobe}
    raise ValueError(f"unknown index type {kind!r}; use 'flat', 'hnsw' or 'ivf'")


def build_index(vectors: np.ndarray, kind: str, settings: IndexSettings, seed: int = 0):
    """``(index, params)``: an inner-product index of ``kind`` over ``vectors``, whose ids are
    row positions (added in a seeded order, so a rebuild gives the same graph)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    base, params = _base_index(kind, vectors, settings, seed)
    index = faiss.IndexIDMap2(base)
    order = np.random.default_rng(seed).permutation(len(vectors))
    index.add_with_ids(vectors[order], order.astype(np.int64))
    return index, params


def apply_search_params(index, manifest: "IndexManifest") -> None:
    """Set the manifest's search-time parameters (efSearch, nprobe) on a loaded index."""
    import faiss

    space = faiss.ParameterSpace()
    for name in ("efSearch", "nprobe"):
        if name in manifest.params:
            space.set_index_parameter(index, name, manifest.params[name])


def write_index(index, manifest: IndexManifest, folder: Path) -> IndexManifest:
    """Write index and manifest atomically; returns the manifest with the file checksum."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    tmp_index = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
    faiss.write_index(index, str(tmp_index))
    manifest = IndexManifest(**{**asdict(manifest), "index_sha256": file_sha256(tmp_index)})
    tmp_manifest = folder / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp_manifest.write_text(json.dumps(asdict(manifest), indent=2))
    tmp_index.replace(folder / INDEX_FILE)
    tmp_manifest.replace(folder / MANIFEST_FILE)
    return manifest


def read_manifest(folder: Path) -> IndexManifest:
    return IndexManifest(**json.loads((folder / MANIFEST_FILE).read_text()))


def read_index(folder: Path, model: str, item_ids: np.ndarray, vectors: np.ndarray,
               built_by: str = "faiss_index"):
    """Load the index, refusing one built from another model or other embeddings (the error
    names ``built_by``, the asset that rebuilds it)."""
    import faiss

    manifest = read_manifest(folder)
    expected = embeddings_digest(item_ids, vectors)
    problems = []
    if manifest.model != model:
        problems.append(f"model {manifest.model!r} != {model!r}")
    if manifest.count != len(item_ids) or manifest.dims != vectors.shape[1]:
        problems.append(f"shape {manifest.count}x{manifest.dims} != {len(item_ids)}x{vectors.shape[1]}")
    if manifest.embeddings_sha256 != expected:
        problems.append("embeddings checksum differs")
    if file_sha256(folder / INDEX_FILE) != manifest.index_sha256:
        problems.append("index file checksum differs from its manifest")
    if problems:
        raise IndexMismatchError(
            f"{folder / INDEX_FILE} does not match the embeddings it should serve: "
            + "; ".join(problems) + f". Re-materialize {built_by}."
        )
    index = faiss.read_index(str(folder / INDEX_FILE))
    apply_search_params(index, manifest)
    return index, manifest


def new_manifest(model: str, index_type: str, item_ids: np.ndarray, vectors: np.ndarray,
                 build_seconds: float, params: dict | None = None) -> IndexManifest:
    return IndexManifest(model=model, index_type=index_type, params=params or {}, count=len(item_ids),
                         dims=int(vectors.shape[1]), embeddings_sha256=embeddings_digest(item_ids, vectors),
                         built_at=time.time(), build_seconds=build_seconds)


def build_and_write(vectors: np.ndarray, item_ids: np.ndarray, model: str, folder: Path,
                    settings: IndexSettings, built_by: str = "faiss_index") -> tuple[IndexManifest, str]:
    """Build the index the catalogue size calls for, write it with its manifest, and load it
    back as the recall stage will: (manifest, problem), problem "" when it loads and matches."""
    kind = settings.choose(len(item_ids))
    start = time.perf_counter()
    index, params = build_index(vectors, kind, settings)
    seconds = time.perf_counter() - start
    manifest = write_index(index, new_manifest(model, kind, item_ids, vectors, seconds, params), folder)
    try:
        loaded, _ = read_index(folder, model, item_ids, vectors, built_by)
    except IndexMismatchError as exc:
        return manifest, str(exc)
    return manifest, "" if loaded.ntotal == len(item_ids) else f"{loaded.ntotal} vectors for {len(item_ids)} items"
