"""Probe: train the recall model once instead of twice, judged on the validation cut only (the
test split is never read).

Today ``recall_model`` early-stops on the validation cut (trained on the fit part, best epoch E
on the held-out part), then refits from scratch on all of training for E epochs: the model is
trained twice. Whether the refit buys anything cannot be measured on the cut it trained on, so
the probe moves everything one cut down. The training part's own fit part becomes "training"
and is cut again by the protocol's rule 2 ("fit" / "held out" inside it); every variant then
plays the served model and is scored on the real held-out part, which none of them saw:

- ``validated``: the early-stopping model (trained on the inner fit part, E epochs);
- ``refit``: today's refit, from scratch on all of "training" for E epochs;
- ``warm newest xK``: the early-stopping model trained on for K more passes over the inner
  held-out part's interactions only (the newest: each user's last 20%), histories in full;
- ``warm all xK``: the early-stopping model trained on for K more passes over all of "training".

Reported: validation Recall@50 with a paired bootstrap (95%) against ``refit``, and each
variant's training seconds.

    .venv/bin/python -m bench.experiments.probe_train_once --home <home a full run filled>

Recorded run: bench/results/experiments/probe_train_once.txt.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.evaluation.protocol import validation_matrices  # noqa: E402
from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.features.split import SplitProtocol, item_sides, split_interactions  # noqa: E402
from recall_pipeline.core.recall.route_selection import paired_gain  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.training import recall_model, two_tower  # noqa: E402
from recall_pipeline.core.training.two_tower.losses import log_q  # noqa: E402
from recall_pipeline.core.training.two_tower.serving import dense_scorer  # noqa: E402
from recall_pipeline.core.training.two_tower.trainer import _optimizer, _seeded, train_epoch  # noqa: E402

from bench.validation import read_split_and_embeddings  # noqa: E402


def inner_split(split: pl.DataFrame) -> pl.DataFrame:
    """The training part as a split of its own: its fit part is "train", its held-out part
    "warm_test", and "train" is cut again by rule 2 (``val_part``); no item is cold."""
    train = split.filter(pl.col("part") == "train").select("user_id", "item_id", "rating", "timestamp")
    protocol = SplitProtocol(cold_fraction=0.0)
    return split_interactions(train, protocol, item_sides(train["item_id"], protocol))


@dataclass(frozen=True)
class NewestTargets(two_tower.Sequences):
    """Sequences whose training targets are only the interactions flagged ``newest``."""

    newest: np.ndarray = None

    def target_examples(self) -> np.ndarray:
        examples = super().target_examples()
        return examples[self.newest[examples]]


def newest_flags(inner: pl.DataFrame, seq: two_tower.Sequences) -> np.ndarray:
    """Per interaction of ``seq`` (sorted as ``build_sequences`` sorts): in the inner held-out part?"""
    rows = inner.filter(pl.col("part") == "train").sort("user_id", "timestamp", "item_id")
    flags = (rows["val_part"] == "holdout").to_numpy()
    assert len(flags) == len(seq.items)
    return flags


def train_on(model, seq, n_items: int, training: two_tower.TrainingSettings, passes: int) -> tuple[object, float]:
    """A copy of ``model`` trained ``passes`` more epochs over ``seq``'s targets; (model, seconds)."""
    model, started = copy.deepcopy(model), time.perf_counter()
    generator = _seeded(training.seed + 1)
    optimizer = _optimizer(model, training)
    logq = torch.as_tensor(log_q(seq, n_items)) if training.logq else None
    torch.use_deterministic_algorithms(True)
    for _ in range(passes):
        train_epoch(model, seq, optimizer, logq, generator, training)
        model.refresh_lm()
    return model, time.perf_counter() - started


def per_user_recall(model, fit_seq, fit_seen, holdout, seed: int) -> np.ndarray:
    rows = np.flatnonzero(relevant_counts(holdout))
    lists, _ = top_k_scored(dense_scorer(model, fit_seq, holdout.shape[0]), rows, 50, fit_seen.shape[1], fit_seen, seed)
    relevant = holdout[rows]
    return recall_at_k(hit_matrix(lists, relevant), relevant_counts(relevant), 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a home folder a full run has filled")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split, ids, vectors = read_split_and_embeddings(args.home)
    rm = build_rating_matrix(split, ids)
    fit_seen, holdout = validation_matrices(split, rm)  # the real cut: the judge of every variant
    fit_seq = recall_model.fit_sequences(split, rm)
    inner = inner_split(split)
    settings = recall_model.ModelSettings()
    training = settings.training
    print(f"training rows {int((split['part'] == 'train').sum())}: inner fit "
          f"{int((inner['val_part'] == 'fit').sum())}, inner held out {int((inner['val_part'] == 'holdout').sum())}, "
          f"judged on the real held-out part ({int(relevant_counts(holdout).astype(bool).sum())} users)")
    result = recall_model.train(inner, rm, vectors, settings)
    phases = {phase: max(e["seconds"] for e in result.history if e["phase"] == phase) for phase in ("validation", "refit")}
    print(f"early stopping: best epoch {result.best_epoch} of {sum(e['phase'] == 'validation' for e in result.history)}, "
          f"{phases['validation']:.1f} s; refit {phases['refit']:.1f} s")
    newest = NewestTargets(fit_seq.items, fit_seq.ratings, fit_seq.starts, fit_seq.users, newest_flags(inner, fit_seq))
    variants = {"validated": (result.validation_model, 0.0), "refit": (result.model, phases["refit"])}
    for passes in (1, 2, 3):
        variants[f"warm newest x{passes}"] = train_on(result.validation_model, newest, len(ids), training, passes)
    for passes in (1, 2):
        variants[f"warm all x{passes}"] = train_on(result.validation_model, fit_seq, len(ids), training, passes)
    figures = {name: per_user_recall(model, fit_seq, fit_seen, holdout, training.seed)
               for name, (model, _) in variants.items()}
    reference = figures["refit"]
    print(f"{'variant':<16} {'R@50':>7} {'vs refit':>9} {'gain bounds (1-sided 95%)':>26} {'extra s':>8}")
    for name, values in figures.items():
        gain, lower = paired_gain(values, reference)
        _, upper = paired_gain(reference, values)  # the other side: -(upper bound of the gain)
        interval = f"[{lower:+.4f}, {-upper:+.4f}]" if name != "refit" else ""
        print(f"{name:<16} {values.mean():7.4f} {values.mean() - reference.mean():+9.4f} {interval:>26} "
              f"{variants[name][1]:8.1f}")


if __name__ == "__main__":
    main()
