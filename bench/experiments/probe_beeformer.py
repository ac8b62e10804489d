"""Probe: beeFormer's route on 2 cores -- the LM's top layer trained so that text similarity
predicts co-interaction, judged on pseudo-cold validation only (the protocol's rule 4: a seeded
10% of the training items held out with their interactions; the cold test is never read).

beeFormer (RecSys'24) fine-tunes the sentence encoder itself with an interaction loss. Running
the whole LM per step is too slow here, so the states entering the top ``--layers`` layers are
cached once (``core.training.lm_finetune.TopLayers``) and only those layers train. The loss is a
denoising one: each step splits the histories of ``--users-per-step`` sampled fit users at random
into an input half and a target half; the input half's mean embedding, normalised, scores every trained item (cosine over
a temperature), the input items masked out, and softmax cross-entropy spreads the target over
the other half. Only items with fit interactions enter the loss: the pseudo-cold items are never
a target or a negative, as a cold item would not be. Every ``--every`` steps the pseudo-cold
items are embedded by the current layers and scored two ways:
- *cosine*: the user's whole fit history, mean embedding, against the pseudo-cold items;
- *TextCF*: the closed-form TextCF (``core.training.text_cf``) refitted on the new embeddings,
  at the published alpha 0.5 and lambda 0.01 / 0.03 / 0.1;
- *ensemble*: the published TextCF (frozen encoder) plus the cosine above, scaled to TextCF's
  spread and weighted 0.25 to 2.

    .venv/bin/python -m bench.experiments.probe_beeformer --home <bundled home>

Recorded run: bench/results/experiments/probe_beeformer.txt.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.training import text_cf  # noqa: E402
from recall_pipeline.core.training.lm_finetune import TopLayers  # noqa: E402
from recall_pipeline.settings import HomeLayout  # noqa: E402

from bench.validation import read_split_and_embeddings  # noqa: E402

LAMBDAS = (0.01, 0.03, 0.1)
CHUNK = 512
ENSEMBLE_RATIOS = (0.25, 0.5, 1.0, 2.0)


def judge_all(cold: text_cf.PseudoCold, vectors: np.ndarray, frozen: np.ndarray | None = None) -> dict[str, float]:
    """Pseudo-cold Recall@20 of cosine scoring and of TextCF refitted on ``vectors``; with the
    ``frozen`` encoder's features, of the published TextCF plus the cosine (:func:`ensemble`)."""
    features = text_cf.item_features(vectors)
    cosine = text_cf.TextCF(np.diag(np.r_[np.ones(vectors.shape[1]), 0.0]), 0.0, 0.0)
    out = {"cosine": cold.recall(cosine, features)}
    for lam in LAMBDAS:
        out[f"textcf {lam}"] = cold.recall(text_cf.fit(cold.matrix, features, lam, 0.5), features)
    if frozen is not None:
        out.update(ensemble(cold, frozen, features, cosine))
    return out


def ensemble(cold: text_cf.PseudoCold, frozen: np.ndarray, features: np.ndarray, cosine: text_cf.TextCF) -> dict[str, float]:
    """TextCF as published (frozen features, lambda 0.03, alpha 0.5) plus ``ratio`` x the trained
    cosine, the cosine's scores first scaled to TextCF's spread over the pseudo-cold items: one
    TextCF over the two feature sets side by side, its weights block-diagonal."""
    published = text_cf.fit(cold.matrix, frozen, 0.03, 0.5)
    spread = [np.std(m.user_queries(cold.matrix, f, cold.rows) @ f[cold.columns].T)
              for m, f in ((published, frozen), (cosine, features))]
    both = np.hstack([frozen, features])
    out = {}
    for ratio in ENSEMBLE_RATIOS:
        weights = np.zeros((both.shape[1], both.shape[1]))
        weights[:frozen.shape[1], :frozen.shape[1]] = published.weights
        weights[frozen.shape[1]:, frozen.shape[1]:] = ratio * spread[0] / spread[1] * cosine.weights
        out[f"textcf+{ratio}x cosine"] = cold.recall(text_cf.TextCF(weights, 0.0, 0.0), both)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--users-per-step", type=int, default=256)
    parser.add_argument("--cache", default="", help="a file keeping the cached layer inputs between runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    split, ids, vectors = read_split_and_embeddings(Path(args.home))
    with duckdb.connect(str(HomeLayout(Path(args.home)).warehouse), read_only=True) as con:
        texts = con.sql("select item_text from clean.items order by item_id").pl()["item_text"].to_list()
    features = text_cf.item_features(vectors)
    cold = text_cf.pseudo_cold(split, ids)
    print("frozen LM:", fmt(judge_all(cold, vectors)), flush=True)

    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        states, offsets = torch.load(cache)
        model, _ = TextEncoder().transformer()
        layers = copy.deepcopy(model.encoder.layer[len(model.encoder.layer) - args.layers:]).float().train()
        layers.requires_grad_(True)
        top = TopLayers(layers, states, offsets.numpy())
    else:
        top = TopLayers.from_encoder(TextEncoder(), texts, args.layers)
        if cache is not None:
            torch.save((top.states, torch.as_tensor(top.offsets)), cache)
    start_vectors = top.embed_all().numpy()
    print(f"{top.states.shape[0]} token states cached or loaded in {time.perf_counter() - started:.1f}s; "
          f"top layers' start vs stored embeddings, min cosine "
          f"{float((F.normalize(torch.as_tensor(vectors), dim=-1).numpy() * start_vectors).sum(1).min()):.4f}")

    x = sp.csr_matrix(cold.matrix, dtype=np.float32)
    x.data[:] = 1.0
    trained = np.flatnonzero(np.diff(sp.csc_matrix(x).indptr) > 0)
    xt = x[:, trained].tocsr()
    users = np.flatnonzero(np.diff(xt.indptr) >= 2)
    optimizer = torch.optim.AdamW(top.layers.parameters(), lr=args.lr, weight_decay=0.0)
    by_length = trained[np.argsort(np.diff(top.offsets)[trained], kind="stable")]
    chunks = [torch.as_tensor(by_length[i:i + CHUNK]) for i in range(0, len(by_length), CHUNK)]
    back = torch.as_tensor(np.argsort(np.searchsorted(trained, by_length)))
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = rng.choice(users, size=min(args.users_per_step, len(users)), replace=False)
        rows = xt[batch]
        inputs = rows.copy()
        inputs.data = (rng.random(len(inputs.data)) < 0.5).astype(np.float32)
        targets = rows - inputs
        keep = (np.diff(inputs.indptr) > 0) & (np.asarray(targets.sum(1)).ravel() > 0)
        inputs, targets = inputs[keep], targets[keep]
        # trained items x dim, unit norm; in chunks of like length (padding to the longest
        # title of all items made one step cost minutes)
        emb = torch.cat([top(chunk) for chunk in chunks])[back]
        query = F.normalize(torch.sparse.mm(to_torch(inputs), emb), dim=-1)
        logits = (query @ emb.T) / args.temperature
        logits = logits.masked_fill(torch.as_tensor(inputs.toarray() > 0), -1e4)  # not -inf: 0 x -inf is nan
        target = torch.as_tensor(targets.toarray())
        loss = -(F.log_softmax(logits, dim=1) * target).sum(1).div(target.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            now = top.embed_all().numpy()
            print(f"step {step:>4} loss {loss.item():.4f} ({time.perf_counter() - started:.0f}s): "
                  + fmt(judge_all(cold, now, features)), flush=True)


def to_torch(matrix: sp.csr_matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    return torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, coo.shape)


def fmt(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in figures.items())


if __name__ == "__main__":
    main()
