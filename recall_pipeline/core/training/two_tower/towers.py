"""The two towers, over the frozen LM item embeddings (torch).

Item tower: the LM embedding of an item's text through a residual MLP projection, plus a learned
item-id embedding for items that had training interactions. The trainer drops the id embedding
at random, so the tower also learns to place an item from its text alone: that is how items
nobody has rated yet (cold items) are served. A small bias head on the same text features lets
the text predict how popular an item will be.

User tower: attention pooling over the item-tower outputs of the user's most recent
interactions (the keys also carry recency and rating), added to a projection of the user's LM
interest profile (the rating-weighted mean LM embedding of the same window).

The modules are built in a fixed order (the LM buffer, the item tower, the user tower; inside
each, as written): with a seeded torch RNG that order is what makes initial weights repeatable.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recall_pipeline.core.training.two_tower.settings import Architecture

RATING_BUCKETS = 12  # half stars 0..10, 11 = no rating (implicit feedback)


def rating_buckets(ratings: torch.Tensor, rating_max: float) -> torch.Tensor:
    """Half-star buckets 0..10 of a rating scaled to 0..5; 11 for no rating."""
    scaled = torch.nan_to_num(ratings, nan=-1.0) * (5.0 / rating_max)
    buckets = torch.clamp(torch.round(scaled * 2), 0, 10).long()
    return torch.where(torch.isnan(ratings), torch.full_like(buckets, RATING_BUCKETS - 1), buckets)


class ItemTower(nn.Module):
    """LM embedding -> residual MLP projection (+ id embedding) -> unit vector, and a bias."""

    def __init__(self, lm_dim: int, n_items: int, architecture: Architecture):
        super().__init__()
        a = architecture
        self.project = nn.Linear(lm_dim, a.dim)
        self.hidden = nn.Sequential(nn.Linear(lm_dim, a.hidden), nn.GELU())
        self.residual = nn.Linear(a.hidden, a.dim)
        self.bias = nn.Linear(a.hidden, 1)
        self.ids = nn.Embedding(n_items, a.dim) if a.id_embeddings else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.01)
        # which catalogue positions had training interactions (the others never use their id)
        self.register_buffer("has_id", torch.zeros(n_items, dtype=torch.bool))

    def forward(self, lm: torch.Tensor, items: torch.Tensor,
                keep_id: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden(lm)
        out = self.project(lm) + self.residual(hidden)
        if self.ids is not None:
            use = self.has_id[items] if keep_id is None else self.has_id[items] & keep_id
            out = out + self.ids(items) * use.unsqueeze(-1)
        return F.normalize(out, dim=-1), self.bias(hidden).squeeze(-1)


class UserTower(nn.Module):
    """Attention pooling over the history's item vectors plus the projected LM interest profile."""

    def __init__(self, lm_dim: int, architecture: Architecture):
        super().__init__()
        a = architecture
        self.recency = nn.Embedding(a.history_length, a.dim)
        self.rating = nn.Embedding(RATING_BUCKETS, a.dim)
        self.query = nn.Linear(lm_dim, a.dim)
        self.profile = nn.Sequential(nn.Linear(lm_dim, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.dim))
        self.scale = a.dim ** -0.5
        self.rating_max = a.rating_max
        nn.init.normal_(self.recency.weight, std=0.01)
        nn.init.normal_(self.rating.weight, std=0.01)

    def forward(self, history: torch.Tensor, mask: torch.Tensor, ratings: torch.Tensor,
                lm: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``history`` (B, L, dim) item vectors, ``mask`` (B, L) real entries (right-aligned,
        most recent last), ``ratings`` (B, L); the LM profile is the rating-weighted mean of the
        rows ``positions`` (B, L) of ``lm`` (items x lm_dim), summed by ``embedding_bag`` without
        gathering a (B, L, lm_dim) array (at batch 1024 that gather was 40% of an epoch)."""
        weights = torch.nan_to_num(ratings, nan=self.rating_max) / self.rating_max * mask
        summed = F.embedding_bag(positions, lm, mode="sum", per_sample_weights=weights.to(lm.dtype))
        profile = summed / weights.sum(1, keepdim=True).clamp_min(1e-6)
        length = history.shape[1]
        recency = self.recency(torch.arange(length - 1, -1, -1, device=history.device))
        keys = history + recency.unsqueeze(0) + self.rating(rating_buckets(ratings, self.rating_max))
        logits = (keys @ self.query(profile).unsqueeze(-1)).squeeze(-1) * self.scale
        attention = torch.softmax(logits.masked_fill(~mask, -1e9), dim=1) * mask
        pooled = (attention.unsqueeze(-1) * history).sum(1)
        return F.normalize(pooled + self.profile(profile), dim=-1)


class TwoTower(nn.Module):
    """Both towers over a fixed catalogue of LM embeddings (a buffer, saved with it).

    ``lm_top``: the LM's trainable top layers while fine-tuning (else None); they are not saved,
    so ``lm_finetuned`` records that the stored LM embeddings came from them (a plain attribute,
    not a buffer: the weights file stays as it was)."""

    def __init__(self, lm_vectors: np.ndarray, architecture: Architecture, lm_top=None):
        super().__init__()
        self.architecture = architecture
        lm_dim = lm_vectors.shape[1]
        self.register_buffer("lm", torch.tensor(np.asarray(lm_vectors, np.float32)))
        self.item_tower = ItemTower(lm_dim, len(lm_vectors), architecture)
        self.user_tower = UserTower(lm_dim, architecture)
        self.lm_top = lm_top
        self.lm_finetuned = lm_top is not None

    def items(self, positions: torch.Tensor, keep_id: torch.Tensor | None = None, fresh: bool = False):
        """Item vectors and biases; ``fresh``: LM embeddings from the fine-tuned top layers
        (with gradients) instead of the stored ones."""
        lm = self.lm_top(positions) if fresh and self.lm_top is not None else self.lm[positions]
        return self.item_tower(lm, positions, keep_id)

    def refresh_lm(self) -> None:
        """After an epoch of fine-tuning: the stored LM embeddings from the current top layers."""
        if self.lm_top is not None:
            self.lm = self.lm_top.embed_all()

    def users(self, history: torch.Tensor, ratings: torch.Tensor,
              keep_id: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors from history windows (catalogue positions, -1 pads)."""
        mask = history >= 0
        safe = history.clamp_min(0)
        unique, inverse = torch.unique(safe, return_inverse=True)
        vectors, _ = self.items(unique, None if keep_id is None else keep_id[unique])
        return self.user_tower(vectors[inverse], mask, ratings, self.lm, safe)
