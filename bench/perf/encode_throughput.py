"""Items encoded per second: the pipeline's encoder against a plain transformers loop.

Both encode the same cleaned item texts of the bundled data with the bundled all-MiniLM-L6-v2
on this machine, in one run, so the ratio is free of machine differences. The plain loop is what
one writes first: batches in catalogue order, mean pooling, normalisation. The pipeline sorts
texts by token length so that batches carry little padding.

    .venv/bin/python -m bench.perf.encode_throughput [--items 3000] [--batch-size 64] [--repeats 2]

Recorded run: bench/results/perf/encode_throughput.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from recall_pipeline.core.features.encode import TextEncoder, bundled_model_path  # noqa: E402
from recall_pipeline.core.ingest.item_text import clean_items  # noqa: E402
from recall_pipeline.core.ingest.sources import load_bundled  # noqa: E402


def plain_loop(tokenizer, model, texts: list[str], batch_size: int) -> None:
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=256, return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=1)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate with torch's threads, best of ``repeats``."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = min(_seconds(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def useful_flops(model, lengths: list[int]) -> float:
    """Forward FLOPs over the real (unpadded) tokens: 2 per weight per token in the encoder
    layers, plus the attention products (4 * layers * hidden * length^2 per text)."""
    config = model.config
    layer_params = sum(p.numel() for name, p in model.named_parameters() if ".layer." in name)
    tokens = sum(lengths)
    attention = 4 * config.num_hidden_layers * config.hidden_size * sum(n * n for n in lengths)
    return 2 * layer_params * tokens + attention


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    _, raw_items = load_bundled(batch_id="bench")
    items, _ = clean_items(raw_items)
    # A seeded shuffle: catalogue order by id would already be roughly grouped by era.
    texts = items.sample(fraction=1.0, shuffle=True, seed=0)["item_text"].head(args.items).to_list()
    encoder = TextEncoder(batch_size=args.batch_size)
    encoder.encode(texts[:8])  # load weights outside the timing
    path = bundled_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    pipeline_s = best_of(args.repeats, lambda: encoder.encode(texts))
    plain_s = best_of(args.repeats, lambda: plain_loop(tokenizer, model, texts, args.batch_size))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {datetime.now():%Y-%m-%d}")
    print(f"texts: {len(texts)} cleaned bundled item texts, batch size {args.batch_size}, best of {args.repeats}")
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    flops = useful_flops(model, lengths)
    peak = matmul_gflops()
    print(f"tokens: {sum(lengths)} real tokens, {flops / 1e9:.1f} GFLOP of useful work; "
          f"float32 matmul rate here (2048^2, torch): {peak:.1f} GFLOP/s")
    for name, seconds in (("plain transformers loop", plain_s), ("pipeline encoder", pipeline_s)):
        achieved = flops / seconds / 1e9
        print(f"{name:<24} {len(texts) / seconds:8.1f} items/s  {achieved:6.1f} GFLOP/s  "
              f"{achieved / peak:6.1%} of the matmul rate")
    print(f"ratio pipeline / plain:  {plain_s / pipeline_s:8.2f}x")


if __name__ == "__main__":
    main()
