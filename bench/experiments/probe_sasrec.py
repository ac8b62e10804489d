"""Probe: a sequential route (SASRec, Kang & McAuley ICDM'18: a causal self-attention encoder over
the user's chronological history, trained with a full softmax over the catalogue) beside the
two-tower and EASE routes, on the validation cut only (fit part -> held-out part; the test split is
never read).

The warm test is each user's *next* 20%, not the next item, so besides SASRec's next-item target
the probe can train each position towards a random one of the next ``--horizon`` items (the
"dense all-action" loss of PinnerFormer, KDD'22), which is closer to that horizon. Reported: the
route alone and fused with the published routes (reciprocal-rank fusion at the defaults,
popularity discount, MMR off) at a few weights, with coverage@50 and long-tail share@50, which
the fusion rule must keep. Epochs are chosen on the held-out part the lists are scored on (as the
two-tower probes do): an upper bound for the route, the question being whether it adds anything.

    .venv/bin/python -m bench.experiments.probe_sasrec --home <bundled home> [--two-tower-cache F]

Recorded run: bench/results/experiments/probe_sasrec.txt.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from recall_pipeline.core.evaluation.metrics import head_items  # noqa: E402
from recall_pipeline.core.recall.fusion import reciprocal_rank_fusion  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings, ease_route, fit_ease_route, popularity_weights  # noqa: E402

from bench.validation import at_50, read_split_and_embeddings, two_tower_lists, validation_cut  # noqa: E402

FUSION_WEIGHTS = (0.25, 0.5, 1.0, 1.5)


class SASRec(nn.Module):
    """Item embeddings shared by input and output, learned positions, causal pre-norm blocks."""

    def __init__(self, n_items: int, dim: int, length: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(length, dim)
        block = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("causal", torch.triu(torch.full((length, length), float("-inf")), 1))
        nn.init.normal_(self.items.weight, std=dim ** -0.5)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch x length x dim) of left-padded item sequences (0 = padding)."""
        length = seq.shape[1]
        h = self.items(seq) * math.sqrt(self.items.embedding_dim) + self.positions.weight[-length:]
        h = self.dropout(h) * (seq > 0).unsqueeze(-1)
        h = self.blocks(h, mask=self.causal[:length, :length], is_causal=True)
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.items.weight[1:].T


def fit_sequences(split: pl.DataFrame, user_ids: np.ndarray, ids: np.ndarray):
    """Per matrix row, the fit part's items in the protocol's order (timestamp, item id), as
    vocabulary indices 1..V; and the catalogue index of each vocabulary entry."""
    fit = (split.filter(pl.col("val_part") == "fit").sort("user_id", "timestamp", "item_id")
           .select("user_id", "item_id"))
    vocab = np.unique(fit["item_id"].to_numpy())
    catalogue = np.searchsorted(ids, vocab)
    rows = {u: r for r, u in enumerate(user_ids.tolist())}
    sequences: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(user_ids)
    for (user,), group in fit.group_by(["user_id"], maintain_order=True):
        sequences[rows[user]] = np.searchsorted(vocab, group["item_id"].to_numpy()) + 1
    return sequences, catalogue


def training_batches(sequences, length: int, horizon: int, batch: int, rng: np.random.Generator):
    """One epoch: ceil(n / length) windows per user at random ends; each position's target is a
    random one of the next ``horizon`` items of the user's whole fit sequence."""
    windows = []
    for seq in sequences:
        n = len(seq)
        if n < 2:
            continue
        for end in rng.integers(1, n, size=math.ceil(n / length)):   # inputs seq[start:end]
            start = max(0, end - length)
            places = np.arange(start, end)
            reach = np.minimum(n - 1 - places, horizon)
            targets = seq[places + 1 + (rng.random(len(places)) * reach).astype(np.int64)]
            inputs = seq[start:end]
            pad = length - len(inputs)
            windows.append((np.pad(inputs, (pad, 0)), np.pad(targets, (pad, 0))))
    order = rng.permutation(len(windows))
    for first in range(0, len(order), batch):
        chunk = [windows[i] for i in order[first:first + batch]]
        yield (torch.from_numpy(np.stack([c[0] for c in chunk])), torch.from_numpy(np.stack([c[1] for c in chunk])))


@torch.no_grad()
def sasrec_lists(model: SASRec, sequences, catalogue: np.ndarray, seen, length: int, depth: int) -> np.ndarray:
    """Top ``depth`` catalogue indices per matrix row from the last ``length`` fit items, the
    user's own fit items excluded (-1 where the user has none)."""
    model.eval()
    lists = np.full((len(sequences), depth), -1, dtype=np.int64)
    rows = [r for r, s in enumerate(sequences) if len(s)]
    for first in range(0, len(rows), 256):
        chunk = rows[first:first + 256]
        seq = np.stack([np.pad(sequences[r][-length:], (length - len(sequences[r][-length:]), 0)) for r in chunk])
        logits = model.logits(model(torch.from_numpy(seq))[:, -1]).numpy()
        for i, r in enumerate(chunk):
            scores = np.full(seen.shape[1], -np.inf, dtype=np.float32)
            scores[catalogue] = logits[i]
            scores[seen.indices[seen.indptr[r]:seen.indptr[r + 1]]] = -np.inf
            top = np.argpartition(-scores, depth)[:depth]
            lists[r] = top[np.argsort(-scores[top], kind="stable")]
    model.train()
    return lists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--two-tower-cache", default="")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--horizon", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="score the held-out part every N epochs")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    split, ids, vectors = read_split_and_embeddings(Path(args.home))
    defaults = RouteSettings()
    rm, holdout, rows, relevant = validation_cut(split, ids)
    seen = rm.matrix.tocsr()
    counts = np.diff(rm.matrix.tocsc().indptr)
    head = head_items(counts, ids)
    sequences, catalogue = fit_sequences(split, rm.user_ids, ids)
    print(f"validation: {len(rows)} users; vocabulary {len(catalogue)} items; {vars(args)}", flush=True)

    model = SASRec(len(catalogue), args.dim, args.length, args.layers, 2, args.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    best = (-1.0, 0, None)
    for epoch in range(1, args.epochs + 1):
        started, total, n = time.perf_counter(), 0.0, 0
        for inputs, targets in training_batches(sequences, args.length, args.horizon, args.batch, rng):
            h = model(inputs)
            keep = targets > 0
            loss = nn.functional.cross_entropy(model.logits(h[keep]), targets[keep] - 1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, n = total + loss.item(), n + 1
        line = f"epoch {epoch:>3}: loss {total / n:.4f} ({time.perf_counter() - started:.1f} s)"
        if epoch % args.every == 0:
            lists = sasrec_lists(model, sequences, catalogue, seen, args.length, defaults.depth)
            recall = at_50(lists[rows], relevant, len(ids), head)[0]
            line += f"; held-out Recall@50 {recall:.4f}"
            if recall > best[0]:
                best = (recall, epoch, lists)
        print(line, flush=True)
    recall, epoch, sequential = best
    print(f"best epoch {epoch}: SASRec alone Recall@50 {recall:.4f}", flush=True)

    two_tower = two_tower_lists(split, rm, ids, vectors, holdout, defaults,
                                Path(args.two_tower_cache) if args.two_tower_cache else None)
    every = np.flatnonzero(np.diff(rm.matrix.indptr) > 0)
    ease = np.full_like(two_tower, -1)
    ease[every] = ease_route(rm, defaults, every, fit_ease_route(rm, defaults))
    weights = popularity_weights(counts, defaults.popularity_discount)
    for name, lists in (("two_tower", two_tower), ("ease", ease), ("sasrec", sequential)):
        print(f"{name} alone: Recall@50 / coverage@50 / long tail@50 "
              + " / ".join(f"{v:.4f}" for v in at_50(lists[rows], relevant, len(ids), head)))
    for w in (0.0,) + FUSION_WEIGHTS:
        fused = reciprocal_rank_fusion({"two_tower": two_tower, "ease": ease, "sasrec": sequential},
                                       {**defaults.weights, "sasrec": w}, 50, len(ids), defaults.rrf_c,
                                       defaults.seed, weights).items[rows]
        print(f"fused, sasrec weight {w}: Recall@50 / coverage@50 / long tail@50 "
              + " / ".join(f"{v:.4f}" for v in at_50(fused, relevant, len(ids), head)), flush=True)


if __name__ == "__main__":
    main()
