"""The champion rule on a constructed data set, with real trainings and a real MLflow store: it
judges on training data alone (corrupting the test parts changes nothing), on the same
validation cut when the data did not change, and on the current holdout less the champion's
training pairs when new feedback moved the cut."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import mlflow
import numpy as np
import polars as pl
import pytest

from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.features.split import split_interactions
from recall_pipeline.core.training import model_registry, recall_model, two_tower
from recall_pipeline.core.training.model_registry import FIRST_VERSION, FRESH_HOLDOUT, OTHER_ENCODER, SAME_CUT

N_TOPICS, ITEMS_PER_TOPIC, USERS_PER_TOPIC = 4, 30, 25
SETTINGS = recall_model.settings_from(dict(dim=16, hidden=32, history_length=8, batch_size=128, max_epochs=3,
                                           patience=2, learning_rate=5e-3))
ENCODER = "lm@1"


def interactions(rng, users, per_user: int, start: datetime, topic_of: np.ndarray) -> list[dict]:
    rows = []
    for user in users:
        own = np.flatnonzero(topic_of == user % N_TOPICS)
        rows += [{"user_id": int(user), "item_id": int(item), "rating": float(rng.choice([3.0, 4.0, 5.0])),
                  "timestamp": start + timedelta(hours=int(user) * 1000 + h)}
                 for h, item in enumerate(rng.permutation(own)[:per_user])]
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Users reading their topic's items; later, feedback: 40 users read 8 more items each."""
    rng = np.random.default_rng(3)
    topic_of = np.repeat(np.arange(N_TOPICS), ITEMS_PER_TOPIC)
    lm = np.eye(N_TOPICS)[topic_of] * 2 + rng.normal(size=(len(topic_of), N_TOPICS * 4))[:, :N_TOPICS] * 0.7
    lm = np.hstack([lm, rng.normal(size=(len(topic_of), 12)) * 0.3])
    lm = (lm / np.linalg.norm(lm, axis=1, keepdims=True)).astype(np.float32)
    users = np.arange(N_TOPICS * USERS_PER_TOPIC)
    before = pl.DataFrame(interactions(rng, users, 15, datetime(2020, 1, 1), topic_of))
    read = set(before.select("user_id", "item_id").iter_rows())
    extra = [r for r in interactions(rng, users[:40], 30, datetime(2021, 1, 1), topic_of)
             if (r["user_id"], r["item_id"]) not in read]
    extra = pl.DataFrame(extra).group_by("user_id", maintain_order=True).head(8)
    after = pl.concat([before, extra.select(before.columns)])
    item_ids = np.arange(len(topic_of))
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment(
        "t", artifact_location=(tmp_path_factory.mktemp("artifacts")).as_uri())
    return {"lm": lm, "item_ids": item_ids, "before": split_interactions(before),
            "after": split_interactions(after), "uri": uri, "experiment": experiment,
            "folders": tmp_path_factory.mktemp("models")}


def rm_of(world, split):
    return build_rating_matrix(split, world["item_ids"])


def train(world, split, settings=SETTINGS) -> two_tower.TrainingResult:
    return recall_model.train(split, rm_of(world, split), world["lm"], settings)


def register(world, result, split, name: str, encoder: str = ENCODER) -> recall_model.Outcome:
    run = mlflow.MlflowClient(world["uri"]).create_run(world["experiment"])
    snapshot = recall_model.data_snapshot(split)
    return recall_model.register_and_judge(
        result, split, rm_of(world, split), world["item_ids"], world["lm"], encoder, world["folders"] / name,
        world["uri"], run.info.run_id, tags={"encoder": encoder, **{k: str(v) for k, v in snapshot.items()}})


def corrupt_test_parts(split: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """The same training part; test parts shuffled across users and items, relevance flipped,
    some rows dropped and others duplicated."""
    rng = np.random.default_rng(seed)
    train = split.filter(pl.col("part") == "train")
    test = split.filter(pl.col("part") != "train")
    test = test.with_columns(user_id=pl.Series(rng.permutation(test["user_id"].to_numpy())),
                             item_id=pl.Series(rng.permutation(test["item_id"].to_numpy())),
                             is_relevant=~pl.col("is_relevant"))
    test = pl.concat([test.head(test.height // 2), test.head(test.height // 4)])
    return pl.concat([test, train])  # another row order too


def judge(world, result, split, champion, encoder=ENCODER, training=SETTINGS.training) -> model_registry.Judgement:
    return recall_model.judge(result, split, rm_of(world, split), world["item_ids"], world["lm"], encoder,
                              world["uri"], champion, training)


@pytest.fixture(scope="module")
def history(world):
    """v1 on the first data (first version), v2 the same training again (same cut), then a
    training on the grown data judged against v2 (fresh holdout)."""
    first = train(world, world["before"])
    v1 = register(world, first, world["before"], "v1")
    v2 = register(world, train(world, world["before"]), world["before"], "v2")
    grown = train(world, world["after"])
    return {"first": first, "v1": v1, "v2": v2, "grown": grown}


def test_first_version_then_same_cut_ties_promote(world, history):
    v1, v2 = history["v1"], history["v2"]
    assert v1.promotion.judgement.judged_on == FIRST_VERSION and v1.promotion.promoted
    j = v2.promotion.judgement
    assert j.judged_on == SAME_CUT and v2.promotion.promoted and v2.champion == v2.promotion.version
    # seeded CPU training: the same data gives the same validation figure, stored exactly
    assert j.candidate_value == j.champion_value == history["first"].best_validation_recall
    holdout = world["before"].filter((pl.col("val_part") == "holdout") & pl.col("is_relevant"))
    assert (j.users, j.interactions) == (holdout["user_id"].n_unique(), holdout.height)
    row = v2.row("dagster-run", "mlflow-run")
    assert row.select("judged_on", "promoted", "champion_after").row(0) == (SAME_CUT, True, v2.promotion.version)


def test_same_cut_decision_ignores_the_test_parts(world, history):
    champion = history["v2"].promotion.version
    clean = judge(world, history["first"], world["before"], champion)
    for seed in range(3):
        assert judge(world, history["first"], corrupt_test_parts(world["before"], seed), champion) == clean


def test_a_moved_cut_is_judged_on_the_holdout_less_the_champions_pairs(world, history):
    champion = history["v2"].promotion.version
    j = judge(world, history["grown"], world["after"], champion)
    assert j.judged_on == FRESH_HOLDOUT
    # independently: the grown data's held-out relevant pairs the champion never trained on
    seen = set(world["before"].filter(pl.col("part") == "train").select("user_id", "item_id").iter_rows())
    held = world["after"].filter((pl.col("val_part") == "holdout") & pl.col("is_relevant"))
    fresh = [r for r in held.select("user_id", "item_id").iter_rows() if r not in seen]
    assert 0 < j.interactions == len(fresh) < held.height
    assert j.users == len({u for u, _ in fresh})
    assert 0.0 <= j.candidate_value <= 1.0 and 0.0 <= j.champion_value <= 1.0
    # the test parts play no part here either
    assert judge(world, history["grown"], corrupt_test_parts(world["after"], 7), champion) == j


def test_a_moved_cut_on_a_large_catalogue_judges_a_sample_of_the_users(world, history):
    """Each judged user ranks the whole catalogue: the validation caps bound the judgement too."""
    champion = history["v2"].promotion.version
    whole = judge(world, history["grown"], world["after"], champion)
    capped = replace(SETTINGS.training, max_validation_cells=5 * len(world["item_ids"]))
    sampled = judge(world, history["grown"], world["after"], champion, training=capped)
    assert sampled.judged_on == FRESH_HOLDOUT and whole.users > 5 == sampled.users
    assert 0 < sampled.interactions < whole.interactions


def test_the_candidates_validation_model_is_what_a_moved_cut_judges(world, history):
    """An untrained early-stopping model loses to the champion; the decision follows."""
    champion = history["v2"].promotion.version
    untrained = replace(history["grown"], validation_model=two_tower.TwoTower(world["lm"], SETTINGS.architecture))
    worse = judge(world, untrained, world["after"], champion)
    good = judge(world, history["grown"], world["after"], champion)
    assert worse.champion_value == good.champion_value
    assert worse.candidate_value < good.candidate_value and not worse.promotes


def test_a_champion_on_another_encoder_loses(world, history):
    champion = history["v2"].promotion.version
    j = judge(world, history["grown"], world["after"], champion, encoder="lm@2")
    assert j.judged_on == OTHER_ENCODER and j.promotes and j.champion_value is None


def test_the_trust_factor_reads_training_data_alone_and_travels_with_the_saved_model(world, history, tmp_path):
    from recall_pipeline.core.training.route_trust import CONFIG_KEY, saved_trust

    split, first = world["before"], history["first"]
    trust = recall_model.trust_of(recall_model.validation_phase(first, split, rm_of(world, split)), world["lm"],
                                  SETTINGS.training)
    assert trust.users > 0 and set(trust.recall) == {0.0, 0.25, 0.5, 0.75, 1.0}
    corrupted = recall_model.trust_of(recall_model.validation_phase(first, corrupt_test_parts(split), rm_of(world, split)),
                                      world["lm"], SETTINGS.training)
    assert (corrupted.factor, corrupted.recall) == (trust.factor, trust.recall)
    two_tower.save_model(first.model, world["item_ids"], tmp_path / "v" / "model", {CONFIG_KEY: 0.25})
    two_tower.save_model(first.model, world["item_ids"], tmp_path / "old" / "model")  # saved before trust existed
    assert [saved_trust(two_tower.read_config(tmp_path / name / "model")) for name in ("v", "old")] == [0.25, 1.0]


def test_rejudging_scores_every_version_on_what_none_trained_on(world, history):
    """On the grown data, v1 and v2 (the same seeded training) are scored on the holdout less
    both versions' pairs: equal figures, the same users as the champion rule's fresh holdout,
    and a tie keeps the champion; the test parts play no part."""
    champion = model_registry.champion_version(world["uri"])
    rm = rm_of(world, world["after"])
    rejudged = recall_model.rejudge(world["after"], rm, world["item_ids"], world["lm"], ENCODER, world["uri"])
    judged = judge(world, history["grown"], world["after"], champion)
    assert set(rejudged.values) >= {"1", "2"} and rejudged.skipped == {}
    assert rejudged.values["1"] == pytest.approx(rejudged.values["2"])
    assert (rejudged.users, rejudged.interactions) == (judged.users, judged.interactions)
    assert rejudged.champion_after == rejudged.champion_before == champion
    again = recall_model.rejudge(corrupt_test_parts(world["after"], 3), rm, world["item_ids"], world["lm"], ENCODER,
                                 world["uri"])
    assert again.values == rejudged.values


def test_a_rejudged_champion_moves_only_to_a_strictly_better_version():
    assert model_registry.rejudged_champion({"1": 0.30, "2": 0.30}, "1") == "1"  # a tie keeps it
    assert model_registry.rejudged_champion({"1": 0.30, "2": 0.31, "3": 0.29}, "1") == "2"
    assert model_registry.rejudged_champion({"2": 0.2, "3": 0.2}, None) == "3"  # none yet: the best, newest first
    assert model_registry.rejudged_champion({}, "4") == "4"
