"""The two-tower model on a constructed data set with a planted structure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

import recall_pipeline
from recall_pipeline.core.training import two_tower
from recall_pipeline.core.evaluation.baselines import most_popular, validation_recall

N_CLUSTERS, ITEMS_PER_CLUSTER, COLD_PER_CLUSTER, USERS_PER_CLUSTER = 4, 40, 8, 30
SMALL = two_tower.Architecture(dim=32, hidden=64, history_length=10)
FAST = two_tower.TrainingSettings(batch_size=64, max_epochs=12, patience=3, learning_rate=5e-3)


@pytest.fixture(scope="module")
def planted():
    """Items in 4 topics (their 'text' embeddings share a topic direction); each user reads one
    topic's warm items, a few globally popular items first. The last 8 items of each topic
    are never interacted with: cold items known only from their text."""
    rng = np.random.default_rng(7)
    topics = rng.normal(size=(N_CLUSTERS, 24))
    n_items = N_CLUSTERS * ITEMS_PER_CLUSTER
    topic_of = np.repeat(np.arange(N_CLUSTERS), ITEMS_PER_CLUSTER)
    lm = topics[topic_of] + 0.6 * rng.normal(size=(n_items, 24))
    lm = (lm / np.linalg.norm(lm, axis=1, keepdims=True)).astype(np.float32)
    warm = np.array([i for i in range(n_items) if i % ITEMS_PER_CLUSTER < ITEMS_PER_CLUSTER - COLD_PER_CLUSTER])
    popular = warm[:3]  # three items of topic 0 everybody reads first
    rows, start = [], datetime(2020, 1, 1)
    for user in range(N_CLUSTERS * USERS_PER_CLUSTER):
        topic = user % N_CLUSTERS
        own = warm[topic_of[warm] == topic]
        picks = list(popular) + [i for i in rng.permutation(own)[:16] if i not in popular]
        rows += [{"user_id": user, "item_id": int(item), "rating": 4.0,
                  "timestamp": start + timedelta(days=day)} for day, item in enumerate(picks)]
    frame = pl.DataFrame(rows)
    user_ids, item_ids = np.arange(N_CLUSTERS * USERS_PER_CLUSTER), np.arange(n_items)
    ranked = frame.with_columns(pos=pl.int_range(pl.len()).over("user_id"), n=pl.len().over("user_id"))
    fit = ranked.filter(pl.col("pos") < pl.col("n") - 4).drop("pos", "n")
    held = ranked.filter(pl.col("pos") >= pl.col("n") - 4)
    holdout = sp.csr_matrix((np.ones(held.height), (held["user_id"].to_numpy(), held["item_id"].to_numpy())),
                            shape=(len(user_ids), n_items))
    seq = lambda f: two_tower.build_sequences(f, user_ids, item_ids)  # noqa: E731
    return {"lm": lm, "topic_of": topic_of, "warm": warm, "fit": seq(fit), "train": seq(frame),
            "holdout": holdout, "user_ids": user_ids, "item_ids": item_ids}


@pytest.fixture(scope="module")
def trained(planted):
    return two_tower.train_two_tower(planted["lm"], planted["fit"], planted["fit"], planted["holdout"],
                                     SMALL, replace(FAST, refit="none"))


def test_windows_hold_only_the_users_earlier_items():
    frame = pl.DataFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [10, 11, 12, 10, 13],
                          "rating": [5.0, None, 3.0, 4.0, 2.0],
                          "timestamp": [datetime(2020, 1, d) for d in (1, 2, 3, 1, 2)]})
    seq = two_tower.build_sequences(frame, np.array([1, 2]), np.array([10, 11, 12, 13]))
    history, ratings = seq.windows(np.array([2, 4]), 3)  # targets: user 1's third, user 2's second
    assert history.tolist() == [[-1, 0, 1], [-1, -1, 0]]
    assert ratings[0, 1] == 5.0 and np.isnan(ratings[0, 2]) and np.isnan(ratings[1, 0])
    rows, last, _ = seq.last_windows(2)
    assert rows.tolist() == [0, 1] and last.tolist() == [[1, 2], [0, 3]]


def test_loss_falls_and_recall_beats_popularity(planted, trained):
    losses = [e["loss"] for e in trained.history]
    assert losses[-1] < 0.8 * losses[0]
    fit_seen = sp.csr_matrix((np.ones(len(planted["fit"].items)), (planted["fit"].users, planted["fit"].items)),
                             shape=planted["holdout"].shape)
    model_recall = validation_recall(two_tower.dense_scorer(trained.model, planted["fit"], len(planted["user_ids"])),
                                     fit_seen, planted["holdout"], k=10)
    popular_recall = validation_recall(most_popular(fit_seen), fit_seen, planted["holdout"], k=10)
    assert trained.best_validation_recall == max(e["validation_recall@50"] for e in trained.history)
    # a user's 4 held-out items are among ~19 unread items of their topic: knowing the topic
    # perfectly gives about 10/19 = 0.53 at K=10; popularity knows only topic 0
    assert model_recall > 0.3 and model_recall > 2 * popular_recall, (model_recall, popular_recall)


def test_cold_items_are_retrievable_from_text_alone(planted, trained):
    """Users' top cold items (never interacted with, no id embedding) are of their own topic."""
    model = trained.model
    cold = np.setdiff1d(planted["item_ids"], planted["warm"])
    assert not model.item_tower.has_id[cold].any() and model.item_tower.has_id[planted["warm"]].all()
    scores = two_tower.dense_scorer(model, planted["fit"], len(planted["user_ids"]))(planted["user_ids"])[:, cold]
    top = cold[np.argsort(-scores, axis=1)[:, :COLD_PER_CLUSTER]]
    own_topic = planted["topic_of"][top] == (planted["user_ids"] % N_CLUSTERS)[:, None]
    assert own_topic.mean() > 0.9  # chance: 0.25


@pytest.mark.parametrize("refit", ["full", "continue"])
def test_training_is_deterministic(planted, refit):
    settings = replace(FAST, max_epochs=2, refit=refit)
    runs = [two_tower.train_two_tower(planted["lm"], planted["train"], planted["fit"], planted["holdout"], SMALL,
                                      settings)
            for _ in range(2)]
    first, second = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)
    refits = runs[0].best_epoch if refit == "full" else settings.refit_epochs
    assert [e["phase"] for e in runs[0].history] == ["validation"] * 2 + ["refit"] * refits


def test_continuing_trains_the_validated_model_on_all_of_training(planted):
    """"continue" starts from the validated model's weights (which it leaves as they were) and
    trains ``refit_epochs`` passes over all of training; "none" serves the validated model itself."""
    args = (planted["lm"], planted["train"], planted["fit"], planted["holdout"], SMALL)
    kept = two_tower.train_two_tower(*args, replace(FAST, max_epochs=2, refit="none"))
    assert kept.served == "validation" and kept.model is kept.validation_model
    continued = two_tower.train_two_tower(*args, replace(FAST, max_epochs=2, refit="continue", refit_epochs=2))
    assert continued.served == "refit" and continued.model is not continued.validation_model
    validated, served = continued.validation_model.state_dict(), continued.model.state_dict()
    assert all(torch.equal(validated[name], kept.model.state_dict()[name]) for name in validated)  # untouched
    assert any(not torch.equal(validated[name], served[name]) for name in validated)
    assert [e["epoch"] for e in continued.history if e["phase"] == "refit"] == [1, 2]


def _tuned(best_epoch: int, epoch_seconds: float, epochs: int) -> two_tower.TrainingResult:
    """A validation phase's result as ``refit_plan`` reads it: its best epoch and its pace."""
    history = [{"phase": "validation", "epoch": e, "seconds": e * epoch_seconds} for e in range(1, epochs + 1)]
    return two_tower.TrainingResult(model=None, history=history, best_epoch=best_epoch)


def test_auto_refit_trains_a_new_model_only_where_one_more_epoch_lost_beyond_the_noise():
    auto, tuned = two_tower.TrainingSettings(), _tuned(best_epoch=2, epoch_seconds=10.0, epochs=5)
    assert auto.refit == "auto"
    mode, why = two_tower.refit_plan(auto, (0.019, 0.008), tuned, 1.25, None)
    assert mode == "full" and "lost +0.0190 of validation Recall@50 (95% lower bound +0.0080)" in why and "for 2 epochs" in why
    assert two_tower.refit_plan(auto, (0.005, -0.001), tuned, 1.25, None)[0] == "continue"  # within the noise
    assert two_tower.refit_plan(auto, None, tuned, 1.25, None) == (
        "continue", "the best epoch was the last one trained: nothing measured past it")
    # the full refit takes 2 epochs at 10 s each on 1.25x the data: 25 s
    assert two_tower.refit_plan(auto, (0.019, 0.008), tuned, 1.25, 26.0)[0] == "full"
    mode, why = two_tower.refit_plan(auto, (0.019, 0.008), tuned, 1.25, 24.0)
    assert mode == "continue" and "about 25 s" in why and "24 s left" in why
    for pinned in ("continue", "full", "none"):  # a pinned refit is what runs, whatever the curve
        assert two_tower.refit_plan(replace(auto, refit=pinned), (0.019, 0.008), tuned, 1.25, None)[0] == pinned


@pytest.mark.parametrize("drop", [None, (0.02, 0.01)], ids=["measured", "patched"])
def test_auto_refit_runs_the_refit_it_records(planted, monkeypatch, drop):
    """"auto" runs the refit its plan names, and serves what that refit pinned serves: on the
    planted data, where validation recall stays at its best past the best epoch, the measured
    drop is within the noise (one more pass); with a drop beyond the noise in place of the
    measured one, a new model for the best epoch's count."""
    from recall_pipeline.core.training.two_tower.early_stopping import EarlyStoppingValidation

    if drop is not None:
        monkeypatch.setattr(EarlyStoppingValidation, "drop_after_best", lambda self, epochs=None: drop)
    args = (planted["lm"], planted["train"], planted["fit"], planted["holdout"], SMALL)
    result = two_tower.train_two_tower(*args, replace(FAST, refit="auto"))
    mode = result.refit.split(":")[0]
    assert mode == ("continue" if drop is None else "full"), result.refit
    assert drop is not None or "within the noise" in result.refit
    refits = [e for e in result.history if e["phase"] == "refit"]
    assert len(refits) == (result.best_epoch if mode == "full" else 1)
    first = result.model.state_dict()
    pinned = two_tower.train_two_tower(*args, replace(FAST, refit=mode))
    assert all(torch.equal(first[name], pinned.model.state_dict()[name]) for name in first)


def test_a_pass_the_budget_cut_is_not_read_as_a_drop(planted):
    """With a budget that ends the first validation pass mid-way, that pass is marked partial,
    nothing is measured past the best epoch, and "auto" keeps one more pass."""
    args = (planted["lm"], planted["train"], planted["fit"], planted["holdout"], SMALL)
    result = two_tower.train_two_tower(*args, replace(FAST, refit="auto", max_train_seconds=0.01))
    validation = [e for e in result.history if e["phase"] == "validation"]
    assert len(validation) == 1 and validation[0]["partial"]
    assert result.refit.startswith("continue: the best epoch was the last one trained")


def test_unknown_refit_kinds_are_refused():
    with pytest.raises(ValueError, match="refit must be one of auto, continue, full, none"):
        two_tower.TrainingSettings(refit="twice")
    with pytest.raises(ValueError, match="refit_epochs must be at least 1"):
        two_tower.TrainingSettings(refit_epochs=0)


def test_save_load_round_trip_and_a_grown_catalogue(planted, trained, tmp_path):
    folder = two_tower.save_model(trained.model, planted["item_ids"], tmp_path / "m", {"encoder": "lm@1"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "item_ids.npy", "model.safetensors"]
    loaded, ids, config = two_tower.load_model(folder)
    assert np.array_equal(ids, planted["item_ids"]) and config["encoder"] == "lm@1"
    np.testing.assert_allclose(two_tower.item_vectors(loaded), two_tower.item_vectors(trained.model), atol=1e-6)
    # a new item 999 whose text is item 5's: placed like item 5 without its id embedding
    grown_ids = np.append(planted["item_ids"], 999)
    grown = two_tower.load_for_catalogue(folder, grown_ids, np.vstack([planted["lm"], planted["lm"][5:6]]), "lm@1")
    vectors = two_tower.item_vectors(grown)
    np.testing.assert_allclose(vectors[:-1], two_tower.item_vectors(trained.model), atol=1e-6)
    cos = vectors[-1, :-1] @ vectors[5, :-1] / np.linalg.norm(vectors[-1, :-1]) / np.linalg.norm(vectors[5, :-1])
    assert cos > 0.5
    with pytest.raises(two_tower.EncoderMismatchError, match="other@2"):
        two_tower.load_for_catalogue(folder, planted["item_ids"], planted["lm"], "other@2")



def _as_saved_before_the_split(folder, training: two_tower.TrainingSettings) -> None:
    """Rewrite a model folder's config.json as models were saved up to 7c7430c: one "settings"
    dict with every field of the architecture and the training run (the weights are unchanged)."""
    config = json.loads((folder / "config.json").read_text())
    config["settings"] = {**config.pop("architecture"), **asdict(training)}
    del config["lm_finetuned"]
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def test_loads_models_saved_with_one_settings_dict(planted, trained, tmp_path):
    """MLflow registries hold versions saved before the settings were split: they still load
    and serve, and whether their LM embeddings were fine-tuned comes from lm_finetune_layers."""
    folder = two_tower.save_model(trained.model, planted["item_ids"], tmp_path / "m", {"encoder": "lm@1"})
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architecture"] == asdict(SMALL) and saved["lm_finetuned"] is False
    _as_saved_before_the_split(folder, replace(FAST, refit="none"))
    loaded, ids, config = two_tower.load_model(folder)
    assert loaded.architecture == SMALL and not loaded.lm_finetuned and config["encoder"] == "lm@1"
    assert np.array_equal(two_tower.item_vectors(loaded), two_tower.item_vectors(trained.model))
    # an old fine-tuned model: known items keep the LM embeddings stored with it, new ones take the catalogue's
    _as_saved_before_the_split(two_tower.save_model(trained.model, planted["item_ids"], tmp_path / "ft"),
                               replace(FAST, lm_finetune_layers=1))
    assert two_tower.load_model(tmp_path / "ft")[0].lm_finetuned
    catalogue = np.vstack([-planted["lm"], planted["lm"][5:6]])
    grown = two_tower.load_for_catalogue(tmp_path / "ft", np.append(planted["item_ids"], 999), catalogue, "lm@1")
    assert np.array_equal(grown.lm.numpy(), np.vstack([planted["lm"], planted["lm"][5:6]]))


def test_the_settings_load_without_torch():
    """The Dagster definitions read the settings when they load: that must not import torch."""
    code = ("import sys; from recall_pipeline.core.training import two_tower; "
            "two_tower.Architecture, two_tower.TrainingSettings; assert 'torch' not in sys.modules")
    root = str(Path(recall_pipeline.__file__).parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": root})

def test_serving_vectors_give_the_training_logits(planted, trained):
    """[u, 1] . [v / temperature, bias] is the model's logit (what FAISS inner product ranks)."""
    model = trained.model
    rows, history, ratings = planted["fit"].last_windows(model.architecture.history_length)
    users = two_tower.user_vectors(model, history[:3], ratings[:3])
    with torch.no_grad():
        u = model.users(torch.as_tensor(history[:3]), torch.as_tensor(ratings[:3]))
        v, b = model.items(torch.arange(len(planted["item_ids"])))
        logits = (u @ v.T / model.architecture.temperature + b).numpy()
    np.testing.assert_allclose(users @ two_tower.item_vectors(model).T, logits, rtol=1e-4, atol=1e-4)


def test_lm_finetune_mode_trains_the_top_layer_and_serves_from_its_embeddings(tmp_path, encoder):
    """With the real MiniLM: the top layer's weights move, the stored item embeddings are its
    output, and a saved model serves without the LM layers."""
    from recall_pipeline.core.training.lm_finetune import TopLayers

    genres = ["Horror", "Children", "Documentary", "Western"]
    texts = [f"Film {i} ({1990 + i % 7}) Genres: {genres[i % 4]}" for i in range(24)]
    frozen = encoder.encode(texts)
    top = TopLayers.from_encoder(encoder, texts, 1)
    np.testing.assert_allclose(top.embed_all().numpy(), frozen, atol=1e-5)  # same as the encoder
    rows, start = [], datetime(2020, 1, 1)
    for user in range(16):
        own = [i for i in range(24) if i % 4 == user % 4]
        rows += [{"user_id": user, "item_id": item, "rating": 5.0, "timestamp": start + timedelta(days=d)}
                 for d, item in enumerate(np.random.default_rng(user).permutation(own))]
    frame = pl.DataFrame(rows)
    seq = two_tower.build_sequences(frame, np.arange(16), np.arange(24))
    holdout = sp.csr_matrix((16, 24))
    architecture = two_tower.Architecture(dim=16, hidden=16, history_length=4)
    settings = two_tower.TrainingSettings(batch_size=16, max_epochs=2, patience=5, lm_finetune_layers=1,
                                          lm_learning_rate=1e-3)
    with pytest.raises(ValueError, match="TopLayers"):
        two_tower.train_two_tower(frozen, seq, seq, holdout, architecture, settings)
    result = two_tower.train_two_tower(frozen, seq, seq, holdout, architecture, settings, lm_top=top)
    trained = result.model
    assert all(np.isfinite(e["loss"]) for e in result.history)
    before, after = top.layers.state_dict(), trained.lm_top.layers.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the template is untouched
    np.testing.assert_allclose(trained.lm.numpy(), trained.lm_top.embed_all().numpy(), atol=1e-6)
    assert np.abs(trained.lm.numpy() - frozen).max() > 1e-3
    folder = two_tower.save_model(trained, np.arange(24), tmp_path / "ft", {"encoder": "lm@1"})
    served = two_tower.load_for_catalogue(folder, np.arange(24), frozen, "lm@1")
    assert served.lm_top is None
    np.testing.assert_allclose(two_tower.item_vectors(served), two_tower.item_vectors(trained), atol=1e-5)


def test_validation_samples_users_beyond_the_cap_and_the_time_budget_stops_early(planted):
    from recall_pipeline.core.training.two_tower.trainer import sample_users, validation_sample

    holdout = planted["holdout"]
    with_relevant = np.flatnonzero(np.diff(holdout.indptr))
    sampled = sample_users(holdout, 5, seed=0)
    kept = np.flatnonzero(np.diff(sampled.indptr))
    assert len(kept) == 5 and set(kept) <= set(with_relevant)
    assert (sampled[kept] != holdout[kept]).nnz == 0          # the kept users keep all their items
    assert sample_users(holdout, len(with_relevant), seed=0) is holdout
    # the cap in cells: users x the whole catalogue each validation ranks; never below one user
    items = holdout.shape[1]
    by_cells = validation_sample(holdout, replace(FAST, max_validation_cells=5 * items + items - 1))
    assert (by_cells != sampled).nnz == 0
    assert np.diff(validation_sample(holdout, replace(FAST, max_validation_cells=1)).indptr).astype(bool).sum() == 1
    assert validation_sample(holdout, replace(FAST, max_validation_users=5)) is not holdout
    assert validation_sample(holdout, FAST) is holdout     # the defaults keep a small catalogue whole
    budget = replace(FAST, max_epochs=50, patience=50, max_train_seconds=1e-9, refit="none")
    result = two_tower.train_two_tower(planted["lm"], planted["fit"], planted["fit"], holdout,
                                       SMALL, budget)
    assert len(result.history) == 1  # stopped after the first epoch: the budget was spent


def test_a_spent_budget_stops_an_epoch_after_its_current_batch(planted):
    """On a large catalogue one epoch can outlast the whole budget: the deadline cuts it short."""
    import time

    from recall_pipeline.core.training.two_tower.trainer import train_epoch
    from recall_pipeline.core.training.two_tower.towers import TwoTower

    seq = planted["fit"]
    batches = -(-len(seq.target_examples()) // FAST.batch_size)
    assert batches > 2  # a whole epoch would take several optimizer steps

    def steps_taken(deadline):
        model = TwoTower(planted["lm"], SMALL)
        model.item_tower.has_id[np.unique(seq.items)] = True
        optimizer = torch.optim.AdamW(model.parameters(), lr=FAST.learning_rate)
        train_epoch(model, seq, optimizer, None, torch.Generator().manual_seed(0), FAST, deadline)
        return int(optimizer.state[model.item_tower.project.weight]["step"])

    assert steps_taken(time.perf_counter()) == 1          # already past: one batch, then stop
    assert steps_taken(None) == batches                   # no budget: the whole pass


def test_the_optimiser_trains_the_weights_torch_s_default_adamw_would(planted):
    """The trainer's AdamW does each step's arithmetic over all parameters at once (faster on
    a large id embedding); an epoch with it ends on exactly the weights of torch's default,
    which updates one parameter at a time."""
    from recall_pipeline.core.training.two_tower.towers import TwoTower
    from recall_pipeline.core.training.two_tower.trainer import _optimizer, train_epoch

    seq = planted["fit"]

    def one_epoch(make_optimizer) -> dict:
        torch.manual_seed(0)
        model = TwoTower(planted["lm"], SMALL)
        model.item_tower.has_id[np.unique(seq.items)] = True
        train_epoch(model, seq, make_optimizer(model), None, torch.Generator().manual_seed(0), FAST)
        return model.state_dict()

    ours = one_epoch(lambda model: _optimizer(model, FAST))
    default = one_epoch(lambda model: torch.optim.AdamW(model.parameters(), lr=FAST.learning_rate,
                                                        weight_decay=FAST.weight_decay))
    untrained = one_epoch(lambda model: torch.optim.AdamW(model.parameters(), lr=0.0))  # the same start, no step
    assert all(torch.equal(ours[name], default[name]) for name in ours)
    assert not torch.equal(ours["item_tower.ids.weight"], untrained["item_tower.ids.weight"])


def test_a_refit_cut_short_by_the_budget_is_not_served(planted):
    """At L the validation took the budget's first half and the refit then trained 44 s of an
    epoch: the served model had barely trained (test Recall@50 0.03 against 0.21 validated)."""
    args = (planted["lm"], planted["train"], planted["fit"], planted["holdout"], SMALL)
    cut = two_tower.train_two_tower(*args, replace(FAST, max_epochs=3, patience=3, max_train_seconds=1e-9))
    refits = [e for e in cut.history if e["phase"] == "refit"]
    assert refits and refits[-1].get("stopped_by_budget")
    assert cut.served == "validation" and cut.model is cut.validation_model
    whole = two_tower.train_two_tower(*args, replace(FAST, max_epochs=2, patience=2, refit="full"))
    assert whole.served == "refit" and whole.model is not whole.validation_model
    assert not any(e.get("stopped_by_budget") for e in whole.history)


def test_keeping_cross_fitted_lists_changes_no_figure_and_no_weight(planted):
    """Early stopping with listed users ranks them deeper and keeps their cross-fitted lists,
    and trains exactly the model (and logs exactly the figures) it does without them."""
    args = (planted["lm"], planted["train"], planted["fit"], planted["holdout"], SMALL, replace(FAST, max_epochs=4))
    plain = two_tower.train_two_tower(*args)
    listed = two_tower.train_two_tower(*args, list_rows=np.array([3, 5, 8, 500]), list_depth=60)
    assert [e.get("validation_recall@50") for e in plain.history] == [e.get("validation_recall@50")
                                                                        for e in listed.history]
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), listed.model.state_dict().values()))
    rows, lists = listed.cross_fitted
    assert rows.tolist() == [3, 5, 8] and lists.shape == (3, 60) and (lists >= 0).all()
    assert plain.cross_fitted[0].size == 0
