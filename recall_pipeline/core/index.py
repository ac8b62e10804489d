"""The FAISS item index: built over unit-norm item embeddings, searched by inner product.

FAISS ids are positions in the sorted catalogue (``item_ids``), so any id type maps back through
the item index table. Items are added in a seeded random order: a flat index returns equal scores
in insertion order, so ties are broken by a fixed random order, as the evaluation protocol
requires, never by item id. The index file and its manifest are written atomically (temporary
file, then rename); loading checks the manifest against the embeddings it is asked to serve.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

INDEX_FILE = "items.faiss"
MANIFEST_FILE = "manifest.json"


class IndexMismatchError(RuntimeError):
    """The stored index was built from other embeddings than the ones it should serve."""


@dataclass(frozen=True)
class IndexManifest:
    """What an index was built from and how; stored beside the index file."""

    model: str
    index_type: str
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
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    order = np.random.default_rng(seed).permutation(len(vectors))
    index.add_with_ids(vectors[order], order.astype(np.int64))
    return index


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_index(index, manifest: IndexManifest, folder: Path) -> IndexManifest:
    """Write index and manifest atomically; returns the manifest with the file checksum."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    tmp_index = folder / f".{INDEX_FILE}.{os.getpid()}.tmp"
    faiss.write_index(index, str(tmp_index))
    manifest = IndexManifest(**{**asdict(manifest), "index_sha256": _file_digest(tmp_index)})
    tmp_manifest = folder / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    tmp_manifest.write_text(json.dumps(asdict(manifest), indent=2))
    tmp_index.replace(folder / INDEX_FILE)
    tmp_manifest.replace(folder / MANIFEST_FILE)
    return manifest


def read_manifest(folder: Path) -> IndexManifest:
    return IndexManifest(**json.loads((folder / MANIFEST_FILE).read_text()))


def read_index(folder: Path, model: str, item_ids: np.ndarray, vectors: np.ndarray):
    """Load the index, refusing one built from another model or other embeddings."""
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
    if _file_digest(folder / INDEX_FILE) != manifest.index_sha256:
        problems.append("index file checksum differs from its manifest")
    if problems:
        raise IndexMismatchError(
            f"{folder / INDEX_FILE} does not match the embeddings it should serve: "
            + "; ".join(problems) + ". Re-materialize faiss_index."
        )
    return faiss.read_index(str(folder / INDEX_FILE)), manifest


def new_manifest(model: str, index_type: str, item_ids: np.ndarray, vectors: np.ndarray,
                 build_seconds: float) -> IndexManifest:
    return IndexManifest(model=model, index_type=index_type, count=len(item_ids),
                         dims=int(vectors.shape[1]), embeddings_sha256=embeddings_digest(item_ids, vectors),
                         built_at=time.time(), build_seconds=build_seconds)
