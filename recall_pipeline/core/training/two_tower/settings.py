"""The two-tower model's settings, in two halves, apart from the model so that reading them
needs no torch (the Dagster definitions import them when they load; keep torch out of here).

``Architecture`` is what a trained model *is*: everything that rebuilding the towers and serving
them reads. It is saved beside the weights (``persistence``), so a model folder loads without the
run that made it. ``TrainingSettings`` is how one run trained it: read only by the loss and the
trainer, recorded as the MLflow run's parameters, never needed to serve. The defaults of both
were checked on the validation cut.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """The towers' shape and the serving logit's scale (saved with the model)."""

    dim: int = 128                # user and item vector size
    hidden: int = 256             # hidden width of the item tower's MLP and the profile projection
    history_length: int = 50      # how many recent interactions the user tower attends over
    id_embeddings: bool = True    # learned item-id embeddings on top of the text (warm items)
    temperature: float = 0.1      # logit = u . v / temperature + bias (item vectors carry 1 / it)
    rating_max: float = 5.0       # the rating scale: weights of the profile, rating buckets


@dataclass(frozen=True)
class TrainingSettings:
    """One training run: the loss's options, the optimiser, early stopping and the seed."""

    id_dropout: float = 0.5       # share of items trained without their id (learns cold items)
    logq: bool = True             # subtract log-popularity from in-batch logits
    batch_size: int = 1024
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    max_epochs: int = 30
    patience: int = 3             # epochs without a better validation recall before stopping
    # After early stopping, how the served model sees the held-out (newest) part of training:
    # "continue": the validated model trained on for ``refit_epochs`` more passes over all of
    # training; "full": a new model trained on all of training for the best number of epochs
    # (the model is trained twice); "none": the validated model as it is; "auto": "full" where
    # one epoch past the best lost validation recall beyond the noise and the budget allows,
    # else "continue" (``trainer.refit_plan``). On a cut one level down of the bundled data
    # (bench/experiments/probe_train_once.py) one more pass scored validation Recall@50 0.3136
    # against the full refit's 0.3071 at a fifth of its time; on the generator's S catalogue,
    # whose curve falls fast past its best epoch, 0.3409 against 0.3596.
    refit: str = "auto"
    refit_epochs: int = 1
    seed: int = 0
    # > 0: also fine-tune the LM's top layers end to end (``core.training.lm_finetune``); off by
    # default. The model records whether it was (``TwoTower.lm_finetuned``): serving needs that.
    lm_finetune_layers: int = 0
    lm_learning_rate: float = 2e-5
    # At scale: validation scores a seeded sample of the held-out users, and a time budget
    # (0: none) stops early stopping's phase at half of it, so the refit of as many epochs
    # ends near it. Each validation ranks every item for each sampled user, so the sample is
    # also capped in cells (users x items): M (20,000 x 100,000) is whole; at 1M items it is
    # 2,000 users, so one validation costs what M's does instead of ten times more.
    max_validation_users: int = 20_000
    max_train_seconds: float = 0.0
    max_validation_cells: int = 2_000_000_000

    def __post_init__(self) -> None:
        if self.refit not in REFITS:
            raise ValueError(f"refit must be one of {', '.join(REFITS)}, got {self.refit!r}")
        if self.refit_epochs < 1:
            raise ValueError(f"refit_epochs must be at least 1, got {self.refit_epochs}")


REFITS = ("auto", "continue", "full", "none")

