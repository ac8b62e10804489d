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


def test_should_promote_both_directions():
    assert model_registry.should_promote(0.30, None)
    assert model_registry.should_promote(0.30, 0.30)
    assert not model_registry.should_promote(0.29, 0.30)


def test_first_version_becomes_champion_then_only_a_better_one_takes_over(store):
    uri, register = store
    first = register()
    decision = model_registry.apply_champion_rule(uri, first, 0.30, None)
    assert decision.promoted and model_registry.champion_version(uri) == first
    assert "first version" in decision.reason

    worse = register()
    decision = model_registry.apply_champion_rule(uri, worse, 0.25, 0.30)
    assert not decision.promoted and model_registry.champion_version(uri) == first
    assert "not promoted" in decision.reason and "0.2500" in decision.reason

    equal = register()
    decision = model_registry.apply_champion_rule(uri, equal, 0.30, 0.30)
    assert decision.promoted and model_registry.champion_version(uri) == equal
    tags = model_registry.client(uri).get_model_version(model_registry.MODEL_NAME, worse).tags
    assert tags[model_registry.MAIN_METRIC] == "0.250000"


def test_versions_resolve_by_number_alias_and_latest_and_download(store, tmp_path):
    uri, register = store
    first, second = register({"train_rows": "10"}), register()
    model_registry.apply_champion_rule(uri, first, 0.3, None)
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
    model_registry.apply_champion_rule(uri, champion, 0.3, None)
    assert retrain_not_needed(uri, champion, 150, "lm@1", 60).startswith("not retrained: 50 new")
    assert retrain_not_needed(uri, champion, 150, "lm@1", 50) == ""      # threshold reached
    assert retrain_not_needed(uri, champion, 150, "lm@2", 60) == ""      # another encoder: retrain
    assert retrain_not_needed(uri, champion, 150, "lm@1", 0) == ""       # 0: always retrain
    assert retrain_not_needed(uri, None, 150, "lm@1", 60) == ""          # no champion yet
    assert retrain_not_needed(uri, champion, 90, "lm@1", 60) == ""       # fewer rows: other data


def test_the_champion_is_not_judged_on_test_interactions_it_trained_on(tmp_path):
    """A changed split can move a pair the champion trained on into the warm test part."""
    import polars as pl

    from recall_pipeline.core.training.recall_model import save_training_pairs, unseen_by

    then = pl.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"],
                         "part": ["train", "train", "train"]})
    save_training_pairs(then, tmp_path)
    now = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["a", "b", "a", "c"],
                        "part": ["train", "warm_test", "warm_test", "warm_test"]})
    judged = unseen_by(now, tmp_path)
    assert judged.rows() == [("u1", "a", "train"), ("u2", "c", "warm_test")]
    assert unseen_by(now, tmp_path / "no-pairs-file").equals(now)
