"""Optional end-to-end fine-tuning of the LM's top transformer layers inside the item tower.

Running the whole LM for every item of every batch is far too slow on a CPU, so the layers
below the top ``n`` stay frozen: the catalogue's token states entering the top layers are
computed once (``TopLayers.from_encoder``), and training runs only the top layers, mean-pools
and normalises, as the encoder does. Gradients reach the top layers through each batch's target
items; the history side reads the item embeddings refreshed after every epoch. Off by default
(``TrainingSettings.lm_finetune_layers = 0``); ``bench/experiments/lm_finetune.py`` measures its cost and
effect.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TopLayers(nn.Module):
    """The LM's top ``n`` layers over cached token states of a fixed catalogue."""

    def __init__(self, layers: nn.ModuleList, states: torch.Tensor, offsets: np.ndarray):
        super().__init__()
        self.layers = layers
        self.states = states            # (total tokens, hidden), frozen inputs of the top layers
        self.offsets = offsets          # item i's tokens are states[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_encoder(cls, encoder, texts: Sequence[str], n_layers: int, batch_size: int = 64) -> "TopLayers":
        """Cache the states entering the top ``n_layers`` of ``encoder``'s model for ``texts``
        (catalogue order) and copy those layers, trainable, out of the frozen model."""
        if encoder.precision != "float32":
            raise ValueError("LM fine-tuning trains the encoder's float32 layers: use encoder precision float32")
        if encoder.pooling != "mean":
            raise ValueError(f"LM fine-tuning supports mean pooling; {encoder.model_ref} uses {encoder.pooling}")
        model, tokenizer = encoder.transformer()
        depth = len(model.encoder.layer)
        if not 0 < n_layers <= depth:
            raise ValueError(f"lm_finetune_layers must be in 1..{depth}, got {n_layers}")
        chunks, lengths = [], []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                  max_length=encoder.max_length, return_tensors="pt").to(encoder.device)
                hidden = model(**batch, output_hidden_states=True).hidden_states[depth - n_layers]
                mask = batch["attention_mask"].bool()
                chunks.append(hidden[mask].float().cpu())
                lengths += mask.sum(1).tolist()
        layers = copy.deepcopy(model.encoder.layer[depth - n_layers:]).float().cpu().train()
        for parameter in layers.parameters():
            parameter.requires_grad_(True)
        return cls(layers, torch.cat(chunks).clone(), np.concatenate([[0], np.cumsum(lengths)]))

    def fresh(self) -> "TopLayers":
        """A trainable copy of the layers with their current weights, sharing the cached states."""
        return TopLayers(copy.deepcopy(self.layers), self.states, self.offsets)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Unit-norm mean-pooled embeddings of the items at ``positions``."""
        idx = positions.cpu().numpy()
        starts, lengths = self.offsets[idx], np.diff(self.offsets)[idx]
        width = int(lengths.max()) if len(idx) else 0
        token = np.arange(width)[None, :]
        mask = token < lengths[:, None]
        gather = torch.as_tensor(np.where(mask, starts[:, None] + token, 0))
        hidden = self.states[gather]
        mask_t = torch.as_tensor(mask)
        additive = torch.zeros(mask_t.shape, dtype=hidden.dtype).masked_fill(~mask_t, torch.finfo(hidden.dtype).min)
        additive = additive[:, None, None, :]
        for layer in self.layers:
            out = layer(hidden, additive)
            hidden = out[0] if isinstance(out, tuple) else out
        weights = mask_t.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def embed_all(self, batch_size: int = 512) -> torch.Tensor:
        """Every catalogue item's current embedding (for the history side and serving)."""
        was_training = self.training
        self.eval()
        n = len(self.offsets) - 1
        out = torch.cat([self(torch.arange(start, min(start + batch_size, n)))
                         for start in range(0, n, batch_size)])
        self.train(was_training)
        return out
