"""A two-tower recall model on top of the frozen LM item embeddings (torch).

Item tower: the LM embedding of an item's text through a residual MLP projection, plus a learned
item-id embedding for items that had training interactions. During training the id embedding is
dropped at random (``id_dropout``), so the tower also learns to place an item from its text
alone: that is how items nobody has rated yet (cold items) are served. A small bias head on the
same text features lets the text predict how popular an item will be.

User tower: attention pooling over the item-tower outputs of the user's most recent training
interactions (the keys also carry recency and rating), added to a projection of the user's LM
interest profile (the rating-weighted mean LM embedding of the same window).

Loss: in-batch sampled softmax over the batch's target items, with the log-popularity (logQ)
correction of the sampling bias (popular items are more often in-batch negatives) and a
temperature. Training examples are next-item predictions: the items before each interaction
(in time order) are the history and the interaction is the target.

Validation follows the evaluation protocol: a chronological cut of training only (fit/held-out),
Recall@50 each epoch, early stopping on it; the model is then refit on all of training for the
best number of epochs. Training is seeded and deterministic on CPU.

Serving: ``item_vectors`` returns ``[v / temperature, bias]`` and ``user_vectors`` returns
``[u, 1]``, so one inner product (FAISS ``METRIC_INNER_PRODUCT``) is the model's logit.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recall_pipeline.core.evaluation.baselines import validation_recall
from recall_pipeline.core.ids import positions, storable_ids
from recall_pipeline.core.training.two_tower_settings import TwoTowerSettings

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ITEM_IDS_FILE = "item_ids.npy"
RATING_BUCKETS = 12  # half stars 0..10, 11 = no rating (implicit feedback)


@dataclass(frozen=True)
class Sequences:
    """Users' interactions in time order, flattened: ``items`` are catalogue positions."""

    items: np.ndarray      # int64, catalogue positions
    ratings: np.ndarray    # float32, NaN for implicit feedback
    starts: np.ndarray     # per flat entry, the flat index where its user's sequence starts
    users: np.ndarray      # per flat entry, the user's row

    def last_windows(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user rows, history windows, ratings) of each user's last ``length`` interactions."""
        if not len(self.users):
            return (np.zeros(0, np.int64), np.zeros((0, length), np.int64), np.zeros((0, length), np.float32))
        ends = np.flatnonzero(np.r_[self.users[1:] != self.users[:-1], True]) + 1
        return (self.users[ends - 1], *self.windows(ends, length))

    def windows(self, ends: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``length`` entries of the same user before each flat index in ``ends`` (ends
        exclusive, at least one entry of the user before each), right-aligned, -1 padded."""
        idx = ends[:, None] - length + np.arange(length)[None, :]
        valid = idx >= self.starts[ends - 1][:, None]
        safe = np.clip(idx, 0, None)
        items = np.where(valid, self.items[safe], -1)
        ratings = np.where(valid, self.ratings[safe], np.nan)
        return items.astype(np.int64), ratings.astype(np.float32)


def build_sequences(interactions: pl.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> Sequences:
    """Sequences of ``interactions`` (user_id, item_id, rating, timestamp) on the given id axes,
    each user's sorted by (timestamp, item id) like the protocol's split."""
    frame = interactions.sort("user_id", "timestamp", "item_id")
    users = positions(user_ids, frame["user_id"].to_numpy(), "users of the training sequences")
    items = positions(item_ids, frame["item_id"].to_numpy(), "items of the training sequences")
    ratings = frame["rating"].cast(pl.Float32).fill_null(float("nan")).to_numpy()
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    starts = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0)) if len(users) else users
    return Sequences(items.astype(np.int64), np.asarray(ratings, np.float32), starts, users)


def rating_buckets(ratings: torch.Tensor, rating_max: float) -> torch.Tensor:
    """Half-star buckets 0..10 of a rating scaled to 0..5; 11 for no rating."""
    scaled = torch.nan_to_num(ratings, nan=-1.0) * (5.0 / rating_max)
    buckets = torch.clamp(torch.round(scaled * 2), 0, 10).long()
    return torch.where(torch.isnan(ratings), torch.full_like(buckets, RATING_BUCKETS - 1), buckets)


class ItemTower(nn.Module):
    """LM embedding -> residual MLP projection (+ id embedding) -> unit vector, and a bias."""

    def __init__(self, lm_dim: int, n_items: int, settings: TwoTowerSettings):
        super().__init__()
        self.project = nn.Linear(lm_dim, settings.dim)
        self.hidden = nn.Sequential(nn.Linear(lm_dim, settings.hidden), nn.GELU())
        self.residual = nn.Linear(settings.hidden, settings.dim)
        self.bias = nn.Linear(settings.hidden, 1)
        self.ids = nn.Embedding(n_items, settings.dim) if settings.id_embeddings else None
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

    def __init__(self, lm_dim: int, settings: TwoTowerSettings):
        super().__init__()
        self.recency = nn.Embedding(settings.history_length, settings.dim)
        self.rating = nn.Embedding(RATING_BUCKETS, settings.dim)
        self.query = nn.Linear(lm_dim, settings.dim)
        self.profile = nn.Sequential(nn.Linear(lm_dim, settings.hidden), nn.GELU(),
                                     nn.Linear(settings.hidden, settings.dim))
        self.scale = settings.dim ** -0.5
        self.rating_max = settings.rating_max
        nn.init.normal_(self.recency.weight, std=0.01)
        nn.init.normal_(self.rating.weight, std=0.01)

    def forward(self, history: torch.Tensor, mask: torch.Tensor, ratings: torch.Tensor,
                history_lm: torch.Tensor) -> torch.Tensor:
        """``history`` (B, L, dim) item vectors, ``mask`` (B, L) real entries (right-aligned,
        most recent last), ``ratings`` (B, L), ``history_lm`` (B, L, lm_dim)."""
        weights = torch.nan_to_num(ratings, nan=self.rating_max) / self.rating_max * mask
        profile = (history_lm * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-6)
        length = history.shape[1]
        recency = self.recency(torch.arange(length - 1, -1, -1, device=history.device))
        keys = history + recency.unsqueeze(0) + self.rating(rating_buckets(ratings, self.rating_max))
        logits = (keys @ self.query(profile).unsqueeze(-1)).squeeze(-1) * self.scale
        attention = torch.softmax(logits.masked_fill(~mask, -1e9), dim=1) * mask
        pooled = (attention.unsqueeze(-1) * history).sum(1)
        return F.normalize(pooled + self.profile(profile), dim=-1)


class TwoTower(nn.Module):
    """Both towers over a fixed catalogue of frozen LM embeddings (a buffer, saved with it)."""

    def __init__(self, lm_vectors: np.ndarray, settings: TwoTowerSettings, lm_top=None):
        super().__init__()
        self.settings = settings
        lm_dim = lm_vectors.shape[1]
        self.register_buffer("lm", torch.tensor(np.asarray(lm_vectors, np.float32)))
        self.item_tower = ItemTower(lm_dim, len(lm_vectors), settings)
        self.user_tower = UserTower(lm_dim, settings)
        self.lm_top = lm_top  # the LM's trainable top layers while fine-tuning, else None

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
        return self.user_tower(vectors[inverse], mask, ratings, self.lm[safe])


@dataclass
class TrainingResult:
    model: TwoTower
    history: list[dict] = field(default_factory=list)  # per epoch: phase, epoch, loss, val recall
    best_epoch: int = 0
    best_validation_recall: float = 0.0
    seconds: float = 0.0
    validation_model: TwoTower | None = None  # the early-stopping phase's model (trained on fit only)


def _target_examples(seq: Sequences) -> np.ndarray:
    """Flat indices that can be a target: every interaction with at least one before it."""
    return np.flatnonzero(np.arange(len(seq.items)) > seq.starts)


def log_q(seq: Sequences, n_items: int) -> np.ndarray:
    """log of each item's share of the training targets (the in-batch sampling probability)."""
    counts = np.bincount(seq.items[_target_examples(seq)], minlength=n_items).astype(np.float64)
    return np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)


def in_batch_loss(model: TwoTower, seq: Sequences, batch: np.ndarray, logq: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Sampled softmax of each example's target against the batch's other targets."""
    s = model.settings
    history, ratings = seq.windows(batch, s.history_length)
    keep_id = torch.rand(model.lm.shape[0], generator=generator) >= s.id_dropout
    users = model.users(torch.as_tensor(history), torch.as_tensor(ratings), keep_id)
    targets = torch.as_tensor(seq.items[batch])
    vectors, bias = model.items(targets, keep_id[targets], fresh=True)
    logits = users @ vectors.T / s.temperature + bias.unsqueeze(0)
    if s.logq:
        logits = logits - logq[targets].unsqueeze(0)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)  # the same item elsewhere is no negative
    logits = logits.masked_fill(same & ~torch.eye(len(batch), dtype=torch.bool), float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(batch)))


def train_epoch(model: TwoTower, seq: Sequences, optimizer: torch.optim.Optimizer, logq: torch.Tensor,
                generator: torch.Generator) -> float:
    model.train()
    examples = _target_examples(seq)
    order = examples[torch.randperm(len(examples), generator=generator).numpy()]
    losses = []
    for start in range(0, len(order), model.settings.batch_size):
        batch = order[start:start + model.settings.batch_size]
        if len(batch) < 2:
            continue
        loss = in_batch_loss(model, seq, batch, logq, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def item_vectors(model: TwoTower) -> np.ndarray:
    """Serving vectors of the whole catalogue: ``[v / temperature, bias]`` (float32)."""
    model.eval()
    vectors, bias = model.items(torch.arange(model.lm.shape[0]))
    return torch.cat([vectors / model.settings.temperature, bias.unsqueeze(-1)], 1).numpy()


@torch.no_grad()
def user_vectors(model: TwoTower, history: np.ndarray, ratings: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Serving vectors ``[u, 1]`` from history windows (catalogue positions, -1 pads)."""
    model.eval()
    out = [model.users(torch.as_tensor(history[i:i + batch]), torch.as_tensor(ratings[i:i + batch]))
           for i in range(0, len(history), batch)]
    users = torch.cat(out) if out else torch.zeros((0, model.settings.dim))
    return torch.cat([users, torch.ones(len(users), 1)], 1).numpy()


def dense_scorer(model: TwoTower, seq: Sequences, n_users: int) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of all items for rating-matrix rows, from each user's last history window in
    ``seq`` (users without history score 0 everywhere)."""
    rows, history, ratings = seq.last_windows(model.settings.history_length)
    users = np.zeros((n_users, model.settings.dim + 1), np.float32)
    users[rows] = user_vectors(model, history, ratings)
    items = item_vectors(model)
    return lambda wanted: users[wanted] @ items.T


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _optimizer(model: TwoTower, settings: TwoTowerSettings) -> torch.optim.Optimizer:
    towers = [p for name, p in model.named_parameters() if not name.startswith("lm_top.")]
    groups = [{"params": towers, "lr": settings.learning_rate}]
    if model.lm_top is not None:
        groups.append({"params": list(model.lm_top.parameters()), "lr": settings.lm_learning_rate})
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def _fit(lm_vectors: np.ndarray, seq: Sequences, settings: TwoTowerSettings, epochs: int | None,
         validate: Callable[[TwoTower], float] | None, log: Callable[[dict], None], phase: str,
         lm_top=None) -> TrainingResult:
    """Train from a seeded start; with ``validate``, stop early and keep the best epoch."""
    generator = _seeded(settings.seed)
    model = TwoTower(lm_vectors, settings, lm_top.fresh() if lm_top is not None else None)
    model.item_tower.has_id[np.unique(seq.items)] = True
    optimizer = _optimizer(model, settings)
    logq = torch.as_tensor(log_q(seq, len(lm_vectors)))
    result, best_state, stale, started = TrainingResult(model), None, 0, time.perf_counter()
    for epoch in range(1, (epochs or settings.max_epochs) + 1):
        loss = train_epoch(model, seq, optimizer, logq, generator)
        model.refresh_lm()
        entry = {"phase": phase, "epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started}
        if validate is not None:
            entry["validation_recall@50"] = recall = validate(model)
            if recall > result.best_validation_recall or best_state is None:
                result.best_epoch, result.best_validation_recall = epoch, recall
                best_state, stale = copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        result.history.append(entry)
        log(entry)
        if validate is not None and stale >= settings.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = epochs or settings.max_epochs
    result.seconds = time.perf_counter() - started
    return result


def train_two_tower(lm_vectors: np.ndarray, train: Sequences, fit: Sequences, holdout: sp.csr_matrix,
                    settings: TwoTowerSettings = TwoTowerSettings(),
                    log: Callable[[dict], None] = lambda entry: None, lm_top=None) -> TrainingResult:
    """Early-stopped on the validation cut (``fit`` sequences, ``holdout`` relevance, rows as
    the rating matrix's users), then refit on ``train`` for the best number of epochs.

    ``lm_top`` (a ``core.lm_finetune.TopLayers`` over the same catalogue) is required when
    ``settings.lm_finetune_layers`` > 0; each phase starts from its original weights."""
    if settings.lm_finetune_layers and lm_top is None:
        raise ValueError("lm_finetune_layers > 0 needs the LM's top layers (core.lm_finetune.TopLayers)")
    fit_seen = _seen(fit, holdout.shape)

    def validate(model: TwoTower) -> float:
        return validation_recall(dense_scorer(model, fit, holdout.shape[0]), fit_seen, holdout, seed=settings.seed)

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        tuned = _fit(lm_vectors, fit, settings, None, validate, log, "validation", lm_top)
        tuned.validation_model = tuned.model
        if not settings.refit:
            return tuned
        final = _fit(lm_vectors, train, settings, tuned.best_epoch, None, log, "refit", lm_top)
    finally:
        torch.use_deterministic_algorithms(previous)
    final.history = tuned.history + final.history
    final.best_epoch, final.best_validation_recall = tuned.best_epoch, tuned.best_validation_recall
    final.seconds += tuned.seconds
    final.validation_model = tuned.model
    return final


def _seen(seq: Sequences, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(seq.items)), (seq.users, seq.items)), shape=shape)


def save_model(model: TwoTower, item_ids: np.ndarray, folder: Path, extra: dict | None = None) -> Path:
    """Weights as safetensors, settings and metadata as JSON, item ids as a plain .npy."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    # the fine-tuned LM layers are not saved: their effect is in the stored item embeddings (lm)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()
               if not name.startswith("lm_top.")}, folder / WEIGHTS_FILE)
    config = {"settings": asdict(model.settings), "lm_dim": int(model.lm.shape[1]),
              "n_items": int(model.lm.shape[0]), **(extra or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    np.save(folder / ITEM_IDS_FILE, storable_ids(item_ids), allow_pickle=False)
    return folder


def load_model(folder: Path) -> tuple[TwoTower, np.ndarray, dict]:
    """The model, its catalogue item ids and its config, from a ``save_model`` folder."""
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    settings = TwoTowerSettings(**config["settings"])
    model = TwoTower(np.zeros((config["n_items"], config["lm_dim"]), np.float32), settings)
    model.load_state_dict(load_file(Path(folder) / WEIGHTS_FILE))
    model.eval()
    return model, np.load(Path(folder) / ITEM_IDS_FILE, allow_pickle=False), config


def extend_catalogue(model: TwoTower, model_item_ids: np.ndarray, item_ids: np.ndarray,
                     lm_vectors: np.ndarray) -> TwoTower:
    """The model over another catalogue (e.g. with new items): the LM embeddings of
    ``item_ids`` and, for items the model knew, their learned id embeddings; new items are
    served from text alone."""
    moved = copy.deepcopy(model)
    known = np.isin(item_ids, model_item_ids)
    old = np.searchsorted(model_item_ids, item_ids[known])
    lm = torch.tensor(np.asarray(lm_vectors, np.float32))
    if model.settings.lm_finetune_layers:  # known items keep their fine-tuned LM embeddings
        lm[np.flatnonzero(known)] = model.lm[old]
    moved.lm = lm
    has_id = torch.zeros(len(item_ids), dtype=torch.bool)
    has_id[np.flatnonzero(known)] = model.item_tower.has_id[old]
    moved.item_tower.has_id = has_id
    if model.item_tower.ids is not None:
        weight = torch.zeros(len(item_ids), model.settings.dim)
        weight[np.flatnonzero(known)] = model.item_tower.ids.weight.detach()[old]
        moved.item_tower.ids = nn.Embedding.from_pretrained(weight, freeze=True)
    return moved


def epochs_summary(history: list[dict]) -> str:
    """One line per epoch, for logs."""
    return "\n".join(
        f"{e['phase']} epoch {e['epoch']}: loss {e['loss']:.4f}"
        + (f", validation Recall@50 {e['validation_recall@50']:.4f}" if "validation_recall@50" in e else "")
        for e in history)


class EncoderMismatchError(RuntimeError):
    """The model was trained on another LM's item embeddings than the ones it is given."""


def load_for_catalogue(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str) -> TwoTower:
    """A saved model over the current catalogue (``item_ids`` sorted, their LM embeddings).

    Items added since training are served from their text alone; an item-tower input from
    another encoder than the model's would be meaningless, so that is refused."""
    model, model_item_ids, config = load_model(folder)
    if config.get("encoder") not in (None, encoder):
        raise EncoderMismatchError(
            f"the model in {folder} was trained on {config['encoder']} embeddings, the catalogue has "
            f"{encoder} embeddings: retrain recall_model (materialize it) after changing the encoder")
    return extend_catalogue(model, model_item_ids, np.asarray(item_ids), lm_vectors)
