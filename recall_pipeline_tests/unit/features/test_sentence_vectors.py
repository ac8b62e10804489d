"""Interest sentences kept between runs: a text is encoded once per model, then looked up."""

import numpy as np
import polars as pl

from recall_pipeline.core.features.sentence_vectors import ReusingEncoder, SentenceStore, model_key

SENTENCES = ["Likes Drama and Crime. Recently liked Heat (1995).",
             "Likes Horror. Recently liked Alien (1979) and Up (2009).",
             "Likes Animation. Recently liked Up (2009)."]


class Counting:
    """The real encoder's ``encode``, recording each list of texts it is asked to encode."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return self.encoder.encode(texts)


def test_each_distinct_text_is_encoded_once_and_returned_in_the_order_asked(encoder, tmp_path):
    counting = Counting(encoder)
    reusing = ReusingEncoder(counting, model_key(encoder), SentenceStore(tmp_path, "user_profiles"))
    asked = [SENTENCES[1], SENTENCES[0], SENTENCES[1], SENTENCES[2]]
    vectors = reusing(asked)
    assert counting.calls == [[SENTENCES[1], SENTENCES[0], SENTENCES[2]]]
    np.testing.assert_allclose(vectors, encoder.encode(asked), atol=1e-5)
    assert (reusing.encoded, reusing.reused) == (3, 0)
    assert reusing.table["text"].to_list() == [SENTENCES[1], SENTENCES[0], SENTENCES[2]]


def test_a_saved_stage_spares_its_next_run_every_sentence_it_holds(encoder, tmp_path):
    store, key = SentenceStore(tmp_path, "user_profiles"), model_key(encoder)
    first = ReusingEncoder(Counting(encoder), key, store)
    kept = first(SENTENCES[:2])
    assert store.save(first.table) == []
    counting = Counting(encoder)
    second = ReusingEncoder(counting, key, store)
    vectors = second([SENTENCES[2], SENTENCES[0], SENTENCES[1]])
    assert counting.calls == [[SENTENCES[2]]]   # only the new sentence
    assert (second.encoded, second.reused) == (1, 2)
    np.testing.assert_array_equal(vectors[1:], kept[[0, 1]])   # the kept vectors, bit for bit
    np.testing.assert_allclose(vectors[0], encoder.encode([SENTENCES[2]])[0], atol=1e-5)
    # the table holds all three, reused and new, for the stage's next run
    store.save(second.table)
    third = ReusingEncoder(Counting(encoder), key, store)
    third(SENTENCES)
    assert (third.encoded, third.reused) == (0, 3)


def test_a_stage_reads_only_its_own_file(encoder, tmp_path):
    """What a stage computes must not depend on which other stage ran first."""
    profiles = ReusingEncoder(Counting(encoder), model_key(encoder), SentenceStore(tmp_path, "user_profiles"))
    profiles(SENTENCES)
    profiles.store.save(profiles.table)
    other = ReusingEncoder(Counting(encoder), model_key(encoder), SentenceStore(tmp_path, "route_settings"))
    other(SENTENCES)
    assert (other.encoded, other.reused) == (3, 0)


def test_another_model_key_reuses_nothing(encoder, tmp_path):
    store = SentenceStore(tmp_path, "user_profiles")
    first = ReusingEncoder(Counting(encoder), model_key(encoder), store)
    first(SENTENCES)
    store.save(first.table)
    other = ReusingEncoder(Counting(encoder), model_key(encoder) + "-other", store)
    other(SENTENCES)
    assert (other.encoded, other.reused) == (3, 0)


def test_the_key_names_weights_precision_and_maximum_length(encoder):
    assert model_key(encoder) == f"{encoder.identity.key()}/max{encoder.max_length}"


def test_a_killed_save_is_cleaned_up_and_an_unreadable_file_is_encoded_again(encoder, tmp_path, caplog):
    store = SentenceStore(tmp_path, "user_profiles")
    (tmp_path / ".user_profiles.parquet.4242.tmp").write_bytes(b"half a file")
    (tmp_path / "user_profiles.parquet").write_bytes(b"not parquet")
    reusing = ReusingEncoder(Counting(encoder), model_key(encoder), store)
    with caplog.at_level("WARNING"):
        reusing(SENTENCES[:1])
    assert "user_profiles.parquet unreadable" in caplog.text
    assert (reusing.encoded, reusing.reused) == (1, 0)
    assert store.save(reusing.table) == [".user_profiles.parquet.4242.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user_profiles.parquet"]
    assert pl.read_parquet(tmp_path / "user_profiles.parquet")["text"].to_list() == SENTENCES[:1]


def test_nothing_asked_encodes_nothing(encoder, tmp_path):
    counting = Counting(encoder)
    reusing = ReusingEncoder(counting, model_key(encoder), SentenceStore(tmp_path, "route_settings"))
    assert reusing([]).shape == (0, encoder.dimension)   # the encoder's own empty answer
    assert reusing.table.height == 0 and (reusing.encoded, reusing.reused) == (0, 0)


def test_without_a_store_it_only_removes_duplicates(encoder):
    counting = Counting(encoder)
    reusing = ReusingEncoder(counting, model_key(encoder), None)
    reusing([SENTENCES[0], SENTENCES[0]])
    assert counting.calls == [[SENTENCES[0]]]
