"""The bundled MiniLM encoder: equal to a direct transformers computation, and sensible."""

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from recall_pipeline.core.features.encode import TextEncoder, bundled_model_path

TEXTS = ["Alien (1979) Genres: Horror, Sci-Fi",
         "Toy Story (1995) Genres: Adventure, Animation, Children, Comedy, Fantasy",
         "Aliens (1986) Genres: Action, Adventure, Horror, Sci-Fi",
         "A"]


def direct_embeddings(texts):
    path = bundled_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_matches_direct_transformers_computation(encoder):
    ours = encoder.encode(TEXTS)
    cosine = (ours * direct_embeddings(TEXTS)).sum(axis=1)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    assert cosine.min() > 0.9999


def test_unit_norm_order_kept_and_meaningful(encoder):
    vectors = encoder.encode(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # batching by length must not reorder results: each text alone gives the same vector
    for text, vector in zip(TEXTS, vectors):
        assert float(encoder.encode([text])[0] @ vector) > 0.9999
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]  # Alien is closer to Aliens


def test_identity_names_the_bundled_model(encoder):
    identity = encoder.identity
    assert identity.name == "all-MiniLM-L6-v2"
    assert len(identity.weights_sha256) == 64
    assert identity.key() == TextEncoder().identity.key()
    assert encoder.pooling == "mean" and encoder.max_length == 256


def test_empty_input(encoder):
    assert encoder.encode([]).shape == (0, 384)
