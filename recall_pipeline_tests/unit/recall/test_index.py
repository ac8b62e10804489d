"""The FAISS index: exact results, atomic files, and a manifest that refuses mismatches."""

import json

import faiss
import numpy as np
import pytest

from recall_pipeline.core.recall.index import (
    INDEX_FILE, MANIFEST_FILE, IndexMismatchError, IndexSettings, build_exact_index, build_index,
    new_manifest, read_index, write_index,
)


def unit_vectors(n, d=16, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_search_equals_brute_force():
    vectors, queries = unit_vectors(200), unit_vectors(5, seed=1)
    scores, ids = build_exact_index(vectors).search(queries, 10)
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert (ids == brute).all()
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, brute, axis=1), atol=1e-5)


def test_round_trip_and_manifest(tmp_path):
    ids, vectors = np.arange(100, 130), unit_vectors(30)
    manifest = write_index(build_exact_index(vectors), new_manifest("m@1", "IndexFlatIP", ids, vectors, 0.1),
                           tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX_FILE, MANIFEST_FILE]  # no temp files left
    stored = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert (stored["count"], stored["dims"], stored["model"]) == (30, 16, "m@1")
    index, loaded = read_index(tmp_path, "m@1", ids, vectors)
    assert index.ntotal == 30 and loaded == manifest


@pytest.mark.parametrize("change, message", [
    ("model", "model 'm@1' != 'm@2'"),
    ("vectors", "embeddings checksum differs"),
    ("count", "shape 30x16 != 29x16"),
])
def test_mismatch_is_refused(tmp_path, change, message):
    ids, vectors = np.arange(30), unit_vectors(30)
    write_index(build_exact_index(vectors), new_manifest("m@1", "IndexFlatIP", ids, vectors, 0.1), tmp_path)
    model = "m@2" if change == "model" else "m@1"
    if change == "vectors":
        vectors = unit_vectors(30, seed=5)
    if change == "count":
        ids, vectors = ids[:29], vectors[:29]
    with pytest.raises(IndexMismatchError, match=message):
        read_index(tmp_path, model, ids, vectors)


def clustered(n, d=32, centres=50, seed=0):
    """Unit vectors around a few centres: the neighbourhood structure real embeddings have."""
    rng = np.random.default_rng(seed)
    base = unit_vectors(centres, d, seed)
    v = base[rng.integers(centres, size=n)] + rng.normal(0, 0.3 / np.sqrt(d), (n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind, settings", [
    ("hnsw", IndexSettings(hnsw_m=16, hnsw_ef_construction=64, hnsw_ef_search=128)),
    ("ivf", IndexSettings(ivf_lists=32, ivf_probe=8)),
])
def test_approximate_indexes_find_the_exact_neighbours(kind, settings, tmp_path):
    vectors, queries = clustered(5000), clustered(50, seed=1)
    _, truth = build_index(vectors, "flat", settings)[0].search(queries, 10)
    index, params = build_index(vectors, kind, settings)
    _, found = index.search(queries, 10)
    recall = np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.9
    # the manifest carries the search-time parameters back onto the loaded index
    ids = np.arange(5000)
    write_index(index, new_manifest("m@1", kind, ids, vectors, 0.1, params), tmp_path)
    loaded, manifest = read_index(tmp_path, "m@1", ids, vectors)
    assert manifest.params == params and manifest.index_type == kind
    _, again = loaded.search(queries, 10)
    assert (again == found).all()
    # the manifest's search-time parameters win over what the index file itself stored
    name = "efSearch" if kind == "hnsw" else "nprobe"
    manifest_file = tmp_path / MANIFEST_FILE
    stored = json.loads(manifest_file.read_text())
    stored["params"][name] = 3
    manifest_file.write_text(json.dumps(stored))
    reloaded, _ = read_index(tmp_path, "m@1", ids, vectors)
    base = faiss.downcast_index(reloaded.index)
    assert (base.hnsw.efSearch if kind == "hnsw" else base.nprobe) == 3


def test_index_type_follows_catalogue_size():
    settings = IndexSettings(exact_max_items=100, approximate="ivf")
    assert settings.choose(100) == "flat" and settings.choose(101) == "ivf"
    with pytest.raises(ValueError, match="unknown index type 'annoy'"):
        build_index(unit_vectors(10), "annoy", settings)
