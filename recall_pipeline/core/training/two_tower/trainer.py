"""The training loop: seeded epochs, early stopping on validation recall, then a refit.

Validation follows the evaluation protocol: a chronological cut of training only (fit/held-out),
Recall@50 each epoch, early stopping on it; then the served model sees the most recent
interactions too: the validated model trains on for one more pass over all of training
(``refit`` "continue"), or a new model is trained on all of training for the best number of
epochs ("full": the model is trained twice). By default ("auto") the run chooses between them
from its own validation curve (:func:`refit_plan`). Deterministic on CPU:
each phase seeds torch (the initial weights) and its own generator (each epoch's order, then
each batch's id dropout) before building the model; adding, removing or reordering a draw
changes every published figure.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from recall_pipeline.core.training.two_tower.early_stopping import EarlyStoppingValidation
from recall_pipeline.core.training.two_tower.losses import in_batch_loss, log_q
from recall_pipeline.core.training.two_tower.sequences import Sequences
from recall_pipeline.core.training.two_tower.settings import Architecture, TrainingSettings
from recall_pipeline.core.training.two_tower.towers import TwoTower


@dataclass
class TrainingResult:
    """A trained model (its best epoch's weights) and how training went."""

    model: TwoTower
    history: list[dict] = field(default_factory=list)  # per epoch: phase, epoch, loss, val recall
    best_epoch: int = 0
    best_validation_recall: float = 0.0
    seconds: float = 0.0
    validation_model: TwoTower | None = None  # the early-stopping phase's model (trained on fit only)
    # (rows, lists) of the listed held-out users, each from the epoch the other half of the
    # validation users would have kept (``early_stopping``): what the fusion is chosen on
    cross_fitted: tuple[np.ndarray, np.ndarray] | None = None
    served: str = "refit"  # which phase's model ``model`` is: "refit", or "validation" (see train_two_tower)
    refit: str = ""  # the refit that ran ("continue", "full" or "none") and why: ``refit_plan``


def train_epoch(model: TwoTower, seq: Sequences, optimizer: torch.optim.Optimizer, logq: torch.Tensor | None,
                generator: torch.Generator, training: TrainingSettings, deadline: float | None = None) -> float:
    """One pass over every target example in a seeded random order; the mean batch loss. Past
    ``deadline`` (a ``time.perf_counter()`` value) the pass stops after the current batch: on a
    large catalogue one epoch can outlast the whole time budget."""
    model.train()
    examples = seq.target_examples()
    order = examples[torch.randperm(len(examples), generator=generator).numpy()]
    losses = []
    for start in range(0, len(order), training.batch_size):
        batch = order[start:start + training.batch_size]
        if len(batch) < 2:  # a softmax over one candidate teaches nothing
            continue
        loss = in_batch_loss(model, seq, batch, logq, training.id_dropout, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if deadline is not None and time.perf_counter() >= deadline:
            break
    return float(np.mean(losses)) if losses else float("nan")


def train_two_tower(lm_vectors: np.ndarray, train: Sequences, fit: Sequences, holdout: sp.csr_matrix,
                    architecture: Architecture = Architecture(), training: TrainingSettings = TrainingSettings(),
                    log: Callable[[dict], None] = lambda entry: None, lm_top=None,
                    list_rows: np.ndarray | None = None, list_depth: int = 50) -> TrainingResult:
    """Early-stopped on the validation cut (``fit`` sequences, ``holdout`` relevance, rows as
    the rating matrix's users), then refit on ``train`` as ``training.refit`` says: the validated
    model trained on for ``refit_epochs`` passes ("continue"), or a new model for the best number
    of epochs ("full"). When the time budget stops the refit before it is done, the validated
    model is the one returned (``served`` "validation"): a refit cut short was never measured.

    ``lm_top`` (a ``core.training.lm_finetune.TopLayers`` over the same catalogue) is given
    exactly when ``training.lm_finetune_layers`` > 0; each phase starts from its original weights.
    ``list_rows``: held-out users whose ``list_depth``-deep validation lists to keep, cross-fitted
    (``early_stopping``; ``TrainingResult.cross_fitted``)."""
    if training.lm_finetune_layers and lm_top is None:
        raise ValueError("lm_finetune_layers > 0 needs the LM's top layers (core.training.lm_finetune.TopLayers)")
    if lm_top is not None and not training.lm_finetune_layers:
        raise ValueError("the LM's top layers were given but lm_finetune_layers is 0")
    validate = EarlyStoppingValidation(fit, fit.seen(holdout.shape), validation_sample(holdout, training),
                                       training.seed, list_rows, list_depth)

    # a budget: early stopping's phase ends at half of it (mid-epoch if need be), the refit at all of it
    budget, started = training.max_train_seconds, time.perf_counter()
    half_way, end = (started + budget / 2, started + budget) if budget > 0 else (None, None)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        refit = training.refit != "none"
        tuned = _fit(lm_vectors, fit, architecture, training, None, validate, log, "validation", lm_top,
                     half_way if refit else end)
        tuned.validation_model, tuned.cross_fitted = tuned.model, validate.cross_fitted()
        whole = sum(1 for e in tuned.history if not e.get("partial"))
        mode, why = refit_plan(training, validate.drop_after_best(whole), tuned, len(train.target_examples()) /
                               max(len(fit.target_examples()), 1), None if end is None else end - time.perf_counter())
        if not refit:
            tuned.served, tuned.refit = "validation", f"{mode}: {why}"
            return tuned
        if mode == "full":
            final = _fit(lm_vectors, train, architecture, training, tuned.best_epoch, None, log, "refit", lm_top, end)
        else:
            final = _continue(tuned.model, lm_vectors, train, training, log, end)
    finally:
        torch.use_deterministic_algorithms(previous)
    if final.history and final.history[-1].get("stopped_by_budget"):
        # the budget cut the refit short (at L: 44 s of an epoch after the validation's 148 s):
        # serve the validated model rather than one that trained less and was never measured
        final.model, final.served = tuned.model, "validation"
        why += "; the budget stopped it before its end, so the validated model serves"
    final.history = tuned.history + final.history
    final.best_epoch, final.best_validation_recall = tuned.best_epoch, tuned.best_validation_recall
    final.seconds += tuned.seconds
    final.validation_model, final.cross_fitted = tuned.model, tuned.cross_fitted
    final.refit = f"{mode}: {why}"
    return final


def refit_plan(training: TrainingSettings, drop: tuple[float, float] | None, tuned: TrainingResult,
               data_ratio: float, seconds_left: float | None) -> tuple[str, str]:
    """(the refit to run, why). "auto" chooses from the validation curve: "continue" gives the
    validated model one more pass, in effect one more epoch over the interactions it has seen,
    so where one epoch past the best lost validation recall beyond the noise (``drop``: mean and
    lower bound from ``EarlyStoppingValidation.drop_after_best``) a new model is trained on all
    of training for the best number of epochs instead ("full"), if the time budget has room for
    it (the validation epochs' pace times ``data_ratio``, training's examples over the fit
    part's). On the generator's S catalogue the curve peaked at epoch 2 and fell by 0.019 at
    epoch 3; one cut down, the continued model gained nothing from the newest interactions
    (-0.0009) where a full refit gained +0.0178 and plain EASE +0.0133
    (``bench/experiments/probe_validation_gap.py``)."""
    if training.refit != "auto":
        return training.refit, f"config refit {training.refit}"
    if drop is None:
        return "continue", "the best epoch was the last one trained: nothing measured past it"
    mean, lower = drop
    measured = f"one epoch past the best lost {mean:+.4f} of validation Recall@50 (95% lower bound {lower:+.4f})"
    if lower <= 0:
        return "continue", f"{measured}: within the noise"
    whole = [e for e in tuned.history if e.get("phase") == "validation" and not e.get("partial")]
    pace = whole[-1]["seconds"] / len(whole) if whole else 0.0  # a part of a pass would understate it
    needed = pace * tuned.best_epoch * data_ratio
    if seconds_left is not None and needed > seconds_left:
        return "continue", f"{measured}, but a full refit (about {needed:.0f} s) would not fit the {seconds_left:.0f} s left"
    return "full", f"{measured}: a new model trained on all of training for {tuned.best_epoch} epochs"


def _fit(lm_vectors: np.ndarray, seq: Sequences, architecture: Architecture, training: TrainingSettings,
         epochs: int | None, validate: Callable[[TwoTower], float] | None, log: Callable[[dict], None],
         phase: str, lm_top=None, deadline: float | None = None) -> TrainingResult:
    """Train from a seeded start; with ``validate``, stop early and keep the best epoch; stop at
    ``deadline`` (a ``time.perf_counter()`` value) in any case."""
    generator = _seeded(training.seed)
    model = TwoTower(lm_vectors, architecture, lm_top.fresh() if lm_top is not None else None)
    model.item_tower.has_id[np.unique(seq.items)] = True
    optimizer = _optimizer(model, training)
    logq = torch.as_tensor(log_q(seq, len(lm_vectors))) if training.logq else None
    result, best_state, stale, started = TrainingResult(model), None, 0, time.perf_counter()
    for epoch in range(1, (epochs or training.max_epochs) + 1):
        loss = train_epoch(model, seq, optimizer, logq, generator, training, deadline)
        model.refresh_lm()
        entry = {"phase": phase, "epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started}
        if deadline is not None and time.perf_counter() >= deadline:
            entry["partial"] = True  # the pass may have stopped at the deadline, before its end
        if validate is not None:
            entry["validation_recall@50"] = recall = validate(model)
            if recall > result.best_validation_recall or best_state is None:
                result.best_epoch, result.best_validation_recall = epoch, recall
                best_state, stale = copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        result.history.append(entry)
        log(entry)
        if validate is not None and stale >= training.patience:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            entry["stopped_by_budget"] = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = epochs or training.max_epochs
    result.seconds = time.perf_counter() - started
    return result


def _continue(validated: TwoTower, lm_vectors: np.ndarray, seq: Sequences, training: TrainingSettings,
              log: Callable[[dict], None], deadline: float | None) -> TrainingResult:
    """A copy of the validated model trained ``training.refit_epochs`` more passes over ``seq``
    (all of training: the held-out part's newest interactions and what it had seen), with a new
    optimiser and its own seeded order."""
    generator = _seeded(training.seed + 1)
    model = copy.deepcopy(validated)
    model.item_tower.has_id[np.unique(seq.items)] = True
    optimizer = _optimizer(model, training)
    logq = torch.as_tensor(log_q(seq, len(lm_vectors))) if training.logq else None
    result, started = TrainingResult(model), time.perf_counter()
    for epoch in range(1, training.refit_epochs + 1):
        loss = train_epoch(model, seq, optimizer, logq, generator, training, deadline)
        model.refresh_lm()
        entry = {"phase": "refit", "epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started}
        result.history.append(entry)
        log(entry)
        if deadline is not None and time.perf_counter() >= deadline:
            entry["stopped_by_budget"] = True
            break
    result.seconds = time.perf_counter() - started
    return result


def validation_sample(holdout: sp.csr_matrix, training: TrainingSettings) -> sp.csr_matrix:
    """The held-out users one validation scores: at most ``max_validation_users`` of them and
    at most ``max_validation_cells`` users x items (each ranks the whole catalogue), at least one."""
    by_cells = training.max_validation_cells // max(holdout.shape[1], 1)
    return sample_users(holdout, max(1, min(training.max_validation_users, by_cells)), training.seed)


def sample_users(relevant: sp.csr_matrix, max_users: int, seed: int) -> sp.csr_matrix:
    """``relevant`` with only a seeded sample of ``max_users`` of its users with any relevant
    item kept (all of them when there are not more): validation cost stays bounded."""
    rows = np.flatnonzero(np.diff(relevant.indptr))
    if len(rows) <= max_users:
        return relevant
    keep = np.zeros(relevant.shape[0])
    keep[np.random.default_rng(seed).choice(rows, max_users, replace=False)] = 1.0
    sampled = (sp.diags(keep) @ relevant).tocsr()
    sampled.eliminate_zeros()
    return sampled


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _optimizer(model: TwoTower, training: TrainingSettings) -> torch.optim.Optimizer:
    """AdamW over the towers; the LM's top layers, when fine-tuned, at their own learning rate.
    ``foreach``: each step's arithmetic over all parameters at once, the same numbers as torch's
    CPU default (one parameter at a time), in less time; AdamW updates the whole item-id
    embedding at every batch, which at L (1M x 128) was half of the epochs' time."""
    towers = [p for name, p in model.named_parameters() if not name.startswith("lm_top.")]
    groups = [{"params": towers, "lr": training.learning_rate}]
    if model.lm_top is not None:
        groups.append({"params": list(model.lm_top.parameters()), "lr": training.lm_learning_rate})
    return torch.optim.AdamW(groups, weight_decay=training.weight_decay, foreach=True)
