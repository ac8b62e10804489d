"""The loss: in-batch sampled softmax with the logQ correction (torch).

Each example's target competes with the batch's other targets as negatives, so no negatives are
sampled separately. In-batch negatives are drawn in proportion to popularity, which would teach
the model to push popular items down; subtracting each candidate's log sampling probability
(``log_q``) from its logit corrects that bias. The logit is the serving one, ``u . v /
temperature + bias``, so what is trained is exactly what FAISS ranks.

Id dropout is drawn here, per batch over the whole catalogue: an item trained without its id
embedding must be placed by its text alone, which is how cold items are served.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recall_pipeline.core.training.two_tower.sequences import Sequences
from recall_pipeline.core.training.two_tower.towers import TwoTower


def log_q(seq: Sequences, n_items: int) -> np.ndarray:
    """log of each item's share of the training targets (the in-batch sampling probability)."""
    counts = np.bincount(seq.items[seq.target_examples()], minlength=n_items).astype(np.float64)
    return np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)


def in_batch_loss(model: TwoTower, seq: Sequences, batch: np.ndarray, logq: torch.Tensor | None,
                  id_dropout: float, generator: torch.Generator) -> torch.Tensor:
    """Sampled softmax of each example's target (flat indices ``batch``) against the batch's
    other targets; ``logq`` (per catalogue item) is subtracted when given."""
    a = model.architecture
    history, ratings = seq.windows(batch, a.history_length)
    keep_id = torch.rand(model.lm.shape[0], generator=generator) >= id_dropout
    users = model.users(torch.as_tensor(history), torch.as_tensor(ratings), keep_id)
    targets = torch.as_tensor(seq.items[batch])
    vectors, bias = model.items(targets, keep_id[targets], fresh=True)
    logits = users @ vectors.T / a.temperature + bias.unsqueeze(0)
    if logq is not None:
        logits = logits - logq[targets].unsqueeze(0)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)  # the same item elsewhere is no negative
    logits = logits.masked_fill(same & ~torch.eye(len(batch), dtype=torch.bool), float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(batch)))
