"""The MLflow registry and the champion rule, on a real local tracking store."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from recall_pipeline.core.training import model_registry



from recall_pipeline.core.training import two_tower


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    model = two_tower.TwoTower(np.eye(4, dtype=np.float32), two_tower.Architecture(dim=4, hidden=4, history_length=2))
    folder = two_tower.save_model(model, np.arange(4), tmp_path / "model", {"encoder": "lm@1"})

    def register(tags=None) -> str:
        run = mlflow.MlflowClient(uri).create_run(experiment)
        return model_registry.register_version(uri, run.info.run_id, folder, tags or {})

    return uri, register


def same_cut(candidate: float, champion: float) -> model_registry.Judgement:
    return model_registry.Judgement(model_registry.SAME_CUT, candidate, champion, users=10, interactions=30)


FIRST = model_registry.Judgement(model_registry.FIRST_VERSION, 0.30)


def test_should_promote_both_directions():
    assert model_registry.should_promote(0.30, None)
    assert model_registry.should_promote(0.30, 0.30)
    assert not model_registry.should_promote(0.29, 0.30)
    assert not same_cut(0.29, 0.30).promotes and same_cut(0.30, 0.30).promotes
    assert model_registry.Judgement(model_registry.OTHER_ENCODER, 0.01).promotes  # cannot serve: loses
    assert not model_registry.Judgement(model_registry.FRESH_HOLDOUT, None, None).promotes  # nothing to judge on


def test_first_version_becomes_champion_then_only_a_better_one_takes_over(store):
    uri, register = store
    first = register()
    decision = model_registry.apply_champion_rule(uri, first, FIRST)
    assert decision.promoted and model_registry.champion_version(uri) == first
    assert "first version" in decision.reason

    worse = register()
    decision = model_registry.apply_champion_rule(uri, worse, same_cut(0.25, 0.30))
    assert not decision.promoted and model_registry.champion_version(uri) == first
    assert "not promoted" in decision.reason and "0.2500" in decision.reason
    assert "same validation cut: 10 users, 30 held-out interactions" in decision.reason

    equal = register()
    decision = model_registry.apply_champion_rule(uri, equal, same_cut(0.30, 0.30))
    assert decision.promoted and model_registry.champion_version(uri) == equal
    tags = model_registry.client(uri).get_model_version(model_registry.MODEL_NAME, worse).tags
    assert tags[model_registry.JUDGED_METRIC] == "0.250000"
    assert (tags["judged_on"], tags["champion_judged_recall_at_50"], tags["champion_before"]) == (
        "same validation cut", "0.300000", first)

    unjudged = register()
    decision = model_registry.apply_champion_rule(
        uri, unjudged, model_registry.Judgement(model_registry.FRESH_HOLDOUT, None, None))
    assert not decision.promoted and model_registry.champion_version(uri) == equal
    assert "no held-out interaction that neither version trained on" in decision.reason


def test_versions_resolve_by_number_alias_and_latest_and_download(store, tmp_path):
    uri, register = store
    first, second = register({"train_rows": "10"}), register()
    model_registry.apply_champion_rule(uri, first, FIRST)
    assert model_registry.resolve(uri, "champion") == first
    assert model_registry.resolve(uri, "latest") == second
    assert model_registry.resolve(uri, second) == second
    with pytest.raises(LookupError, match="no version or alias 'nope'"):
        model_registry.resolve(uri, "nope")
    folder = model_registry.download(uri, first, tmp_path / "dl")
    model, ids, config = two_tower.load_model(folder)
    assert ids.tolist() == [0, 1, 2, 3] and config["encoder"] == "lm@1"
    assert model_registry.client(uri).get_model_version(model_registry.MODEL_NAME, first).tags["train_rows"] == "10"


def test_no_champion_before_any_registration(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    assert model_registry.champion_version(uri) is None
    with pytest.raises(LookupError):
        model_registry.resolve(uri, "latest")


def test_retraining_waits_for_enough_new_training_data(store):
    from recall_pipeline.core.training.recall_model import retrain_not_needed

    uri, register = store
    champion = register({"train_rows": "100", "encoder": "lm@1"})
    model_registry.apply_champion_rule(uri, champion, FIRST)
    assert retrain_not_needed(uri, champion, 150, "lm@1", 60).startswith("not retrained: 50 new")
    assert retrain_not_needed(uri, champion, 150, "lm@1", 50) == ""      # threshold reached
    assert retrain_not_needed(uri, champion, 150, "lm@2", 60) == ""      # another encoder: retrain
    assert retrain_not_needed(uri, champion, 150, "lm@1", 0) == ""       # 0: always retrain
    assert retrain_not_needed(uri, None, 150, "lm@1", 60) == ""          # no champion yet
    assert retrain_not_needed(uri, champion, 90, "lm@1", 60) == ""       # fewer rows: other data


def test_test_rows_a_model_trained_on_are_found_only_when_the_split_moved(tmp_path):
    """A changed split can move a pair the model trained on into a test part."""
    import polars as pl

    from recall_pipeline.core.training.training_pairs import (
        read_training_pairs, save_training_pairs, test_rows_trained_on, without,
    )

    then = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "b", "a", "d"],
                         "part": ["train", "train", "train", "warm_test"]})
    save_training_pairs(then, tmp_path)
    pairs = read_training_pairs(tmp_path, then)
    assert sorted(pairs.rows()) == [("u1", "a"), ("u1", "b"), ("u2", "a")]  # training rows only
    now = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u3", "u2"], "item_id": ["a", "b", "a", "c", "d", "a"],
                        "part": ["train", "warm_test", "warm_test", "warm_test", "warm_test", "train"]})
    moved = test_rows_trained_on(now, pairs)
    # (u1, b) left training; (u2, a) is also a current training row (a repeat): no leak
    assert moved.rows() == [("u1", "b", "warm_test")]
    assert without(now, moved).rows() == [r for r in now.rows() if r != ("u1", "b", "warm_test")]
    assert read_training_pairs(tmp_path / "no-pairs-file", now) is None
    assert test_rows_trained_on(now, None).is_empty()


def test_the_search_filter_refuses_names_that_would_break_out_of_the_quotes():
    assert model_registry.name_filter("recall_two_tower") == "name = 'recall_two_tower'"
    for bad in ("x' or name like '%", 'x"', "x\\"):
        with pytest.raises(ValueError, match="quote or backslash"):
            model_registry.name_filter(bad)
