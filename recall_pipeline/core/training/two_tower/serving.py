"""Serving vectors: the model's logit as one inner product.

``item_vectors`` returns ``[v / temperature, bias]`` and ``user_vectors`` returns ``[u, 1]``, so
``user . item`` is exactly the training logit and a FAISS ``METRIC_INNER_PRODUCT`` index over the
item vectors ranks as the model does. ``dense_scorer`` scores every item for the evaluation
protocol and for validation during training (without building an index).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from recall_pipeline.core.scoring import with_columns
from recall_pipeline.core.training.two_tower.sequences import Sequences
from recall_pipeline.core.training.two_tower.towers import TwoTower


@torch.no_grad()
def item_vectors(model: TwoTower) -> np.ndarray:
    """Serving vectors of the whole catalogue: ``[v / temperature, bias]`` (float32)."""
    model.eval()
    vectors, bias = model.items(torch.arange(model.lm.shape[0]))
    return torch.cat([vectors / model.architecture.temperature, bias.unsqueeze(-1)], 1).numpy()


@torch.no_grad()
def user_vectors(model: TwoTower, history: np.ndarray, ratings: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Serving vectors ``[u, 1]`` from history windows (catalogue positions, -1 pads)."""
    model.eval()
    out = [model.users(torch.as_tensor(history[i:i + batch]), torch.as_tensor(ratings[i:i + batch]))
           for i in range(0, len(history), batch)]
    users = torch.cat(out) if out else torch.zeros((0, model.architecture.dim))
    return torch.cat([users, torch.ones(len(users), 1)], 1).numpy()


def dense_scorer(model: TwoTower, seq: Sequences, n_users: int) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of all items for rating-matrix rows, from each user's last history window in
    ``seq`` (users without history score 0 everywhere)."""
    rows, history, ratings = seq.last_windows(model.architecture.history_length)
    users = np.zeros((n_users, model.architecture.dim + 1), np.float32)
    users[rows] = user_vectors(model, history, ratings)
    items = item_vectors(model)
    return with_columns(_product(users, items), lambda columns: _product(users, items[columns]))


def _product(users: np.ndarray, items: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of ``items`` (serving vectors) for the wanted users' rows of ``users``."""
    return lambda wanted: users[wanted] @ items.T
