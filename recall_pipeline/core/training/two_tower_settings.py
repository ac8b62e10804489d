"""The two-tower model's settings, apart from the model so that reading them needs no torch
(the Dagster definitions import them when they load)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TwoTowerSettings:
    """Architecture and training hyper-parameters (the defaults were checked on validation)."""

    dim: int = 128
    hidden: int = 256
    history_length: int = 50
    id_embeddings: bool = True
    id_dropout: float = 0.5
    temperature: float = 0.1
    logq: bool = True
    batch_size: int = 1024
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    max_epochs: int = 30
    patience: int = 3
    refit: bool = True
    rating_max: float = 5.0
    seed: int = 0
    # > 0: also fine-tune the LM's top layers end to end (``core.lm_finetune``); off by default
    lm_finetune_layers: int = 0
    lm_learning_rate: float = 2e-5
