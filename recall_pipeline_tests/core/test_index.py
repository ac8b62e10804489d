"""The FAISS index: exact results, atomic files, and a manifest that refuses mismatches."""

import json

import numpy as np
import pytest

from recall_pipeline.core.index import (
    INDEX_FILE, MANIFEST_FILE, IndexMismatchError, build_exact_index, new_manifest, read_index,
    write_index,
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


def test_ties_come_back_in_seeded_random_order_not_id_order():
    vectors = np.tile(unit_vectors(1), (50, 1))  # 50 identical items: every score ties
    _, ids = build_exact_index(vectors, seed=0).search(vectors[:1], 50)
    assert sorted(ids[0].tolist()) == list(range(50))
    assert ids[0].tolist() != list(range(50))
    _, again = build_exact_index(vectors, seed=0).search(vectors[:1], 50)
    assert (ids == again).all()


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
