"""A two-tower recall model on top of the LM item embeddings, one module per concern:

- ``settings``: ``Architecture`` (saved with the model) and ``TrainingSettings`` (one run's), no torch
- ``sequences``: the training data, users' interactions in time order, cut into history windows
- ``towers``: the item tower (text + id), the user tower (attention over the history + LM
  profile), and ``TwoTower`` holding both over the catalogue's LM embeddings
- ``losses``: in-batch sampled softmax with the logQ correction and id dropout
- ``trainer``: seeded epochs, early stopping on validation Recall@50, refit on all of training
- ``early_stopping``: the per-epoch validation, and validation lists cross-fitted over its choice
- ``serving``: item and user vectors whose inner product is the model's logit
- ``persistence``: a model folder (safetensors + config), and a saved model over a grown catalogue

Callers use the package: ``from recall_pipeline.core.training import two_tower; two_tower.X``.
Only the settings are imported eagerly; every other name imports its module (and torch) on first
use, because the Dagster definitions import the settings when they load and must not pay for
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from recall_pipeline.core.training.two_tower.settings import Architecture, TrainingSettings

_MODULE_OF = {
    "Sequences": "sequences", "build_sequences": "sequences",
    "RATING_BUCKETS": "towers", "rating_buckets": "towers", "ItemTower": "towers", "UserTower": "towers",
    "TwoTower": "towers",
    "log_q": "losses", "in_batch_loss": "losses",
    "TrainingResult": "trainer", "train_epoch": "trainer", "train_two_tower": "trainer", "refit_plan": "trainer",
    "validation_sample": "trainer",
    "item_vectors": "serving", "user_vectors": "serving", "dense_scorer": "serving",
    "WEIGHTS_FILE": "persistence", "CONFIG_FILE": "persistence", "ITEM_IDS_FILE": "persistence",
    "EncoderMismatchError": "persistence", "save_model": "persistence", "load_model": "persistence",
    "read_config": "persistence", "extend_catalogue": "persistence", "load_for_catalogue": "persistence",
}

__all__ = ["Architecture", "TrainingSettings", *_MODULE_OF]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from recall_pipeline.core.training.two_tower.losses import in_batch_loss, log_q
    from recall_pipeline.core.training.two_tower.persistence import (
        CONFIG_FILE, ITEM_IDS_FILE, WEIGHTS_FILE, EncoderMismatchError, extend_catalogue,
        load_for_catalogue, load_model, read_config, save_model,
    )
    from recall_pipeline.core.training.two_tower.sequences import Sequences, build_sequences
    from recall_pipeline.core.training.two_tower.serving import dense_scorer, item_vectors, user_vectors
    from recall_pipeline.core.training.two_tower.towers import (
        RATING_BUCKETS, ItemTower, UserTower, TwoTower, rating_buckets,
    )
    from recall_pipeline.core.training.two_tower.trainer import (
        TrainingResult, train_epoch, train_two_tower, validation_sample,
    )
