"""The bundled MiniLM encoder: equal to sentence-transformers' own encoding, and sensible."""

import json
from pathlib import Path

import numpy as np
import pytest

from recall_pipeline.core.features.encode import TextEncoder, bundled_model_path

TEXTS = ["Alien (1979) Genres: Horror, Sci-Fi",
         "Toy Story (1995) Genres: Adventure, Animation, Children, Comedy, Fantasy",
         "Aliens (1986) Genres: Action, Adventure, Horror, Sci-Fi",
         "A"]


def sentence_transformers_embeddings(folder, texts):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)


def test_matches_sentence_transformers(encoder):
    ours = encoder.encode(TEXTS)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, sentence_transformers_embeddings(bundled_model_path(), TEXTS), atol=1e-5)


def test_pools_as_the_model_folder_says(tmp_path):
    """Another pooling mode in the folder's config (here 'lasttoken') is read and applied as
    sentence-transformers does, not taken for mean pooling."""
    bundled = Path(bundled_model_path())
    for path in bundled.iterdir():
        if path.name != "1_Pooling":
            (tmp_path / path.name).symlink_to(path)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384,
                                                                    "pooling_mode_lasttoken": True}))
    encoder = TextEncoder(str(tmp_path), device="cpu")
    assert encoder.pooling == "lasttoken"
    ours = encoder.encode(TEXTS)
    np.testing.assert_allclose(ours, sentence_transformers_embeddings(tmp_path, TEXTS), atol=1e-5)
    assert (ours * TextEncoder(device="cpu").encode(TEXTS)).sum(1).min() < 0.99  # not the mean


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


def test_empty_input(encoder, monkeypatch):
    """No texts: an empty float32 array as wide as a real embedding, without tokenizing or
    running the model on an empty batch."""
    one = encoder.encode(["A"])

    def refuse(*args, **kwargs):
        raise AssertionError("called for an empty input")

    monkeypatch.setattr(encoder, "_tokenizer", refuse)
    monkeypatch.setattr(encoder, "_model", type("Model", (), {"config": encoder._model.config, "__call__": refuse})())
    empty = encoder.encode([])
    assert empty.shape == (0, one.shape[1]) == (0, 384)
    assert empty.dtype == one.dtype == np.float32


def test_bfloat16_is_close_to_float32_and_keyed_apart(encoder):
    """The opt-in bfloat16 encoder: vectors within a cosine of 0.9999 of float32's where the
    CPU multiplies bfloat16 natively, refused where it does not (slower than float32 there);
    either way its key names the precision, so its vectors are never reused as float32's."""
    from recall_pipeline.core.features.precision import native_bfloat16

    fast = TextEncoder(device="cpu", precision="bfloat16")
    assert fast.identity.key() == encoder.identity.key() + "+bfloat16"
    assert fast.identity.weights_sha256 == encoder.identity.weights_sha256
    if not native_bfloat16("cpu"):
        with pytest.raises(RuntimeError, match="no native bfloat16"):
            fast.encode(TEXTS)
        return
    vectors, exact = fast.encode(TEXTS), encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * exact).sum(1)
    assert cosine.min() > 0.9999 and not np.array_equal(vectors, exact)


def test_unknown_precision_and_finetuning_a_bfloat16_encoder_are_refused():
    from recall_pipeline.core.training.lm_finetune import TopLayers

    with pytest.raises(ValueError, match="float32, bfloat16"):
        TextEncoder(precision="float16")
    with pytest.raises(ValueError, match="precision float32"):
        TopLayers.from_encoder(TextEncoder(precision="bfloat16"), TEXTS, 1)
