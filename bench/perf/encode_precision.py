"""Texts encoded per second at the encoder's two precisions, and how far apart their vectors are.

Both encoders are the pipeline's (``TextEncoder``, texts by token length, batch 64) on the same
cleaned bundled item texts, in one run on this machine, so the ratio is free of machine
differences: float32 (the default) and bfloat16 linear layers (``core.features.precision``).
Each is timed ``--repeats`` times in alternation and its best time kept. Reported: texts per
second of each, their ratio, and the cosine of each text's bfloat16 vector with its float32
vector over every text (minimum, 1st percentile, mean, how many below 0.999).

    .venv/bin/python -m bench.perf.encode_precision [--items 0] [--threads 2] [--repeats 2]

Recorded run: bench/results/perf/encode_precision.txt.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.machine import cpu_name  # noqa: E402
from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.features.precision import native_bfloat16  # noqa: E402
from recall_pipeline.core.ingest.item_text import clean_items  # noqa: E402
from recall_pipeline.core.ingest.sources import load_bundled  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=0, help="first N bundled item texts (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items, _ = clean_items(load_bundled(batch_id="bench")[1])
    texts = items["item_text"].to_list()[: args.items or None]
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, native bfloat16: {native_bfloat16('cpu')}")
    print(f"# {len(texts)} cleaned bundled item texts, batch 64, best of {args.repeats} (alternating)")
    encoders = {p: TextEncoder(device="cpu", precision=p) for p in ("float32", "bfloat16")}
    best = {p: float("inf") for p in encoders}
    vectors = {}
    for encoder in encoders.values():
        encoder.encode(texts[:64])  # load and warm up
    for _ in range(args.repeats):
        for precision, encoder in encoders.items():
            started = time.perf_counter()
            vectors[precision] = encoder.encode(texts)
            best[precision] = min(best[precision], time.perf_counter() - started)
    for precision, seconds in best.items():
        print(f"{precision:<9} {len(texts) / seconds:8.1f} texts/s  ({seconds:.1f} s)")
    print(f"ratio bfloat16 / float32: {best['float32'] / best['bfloat16']:.2f}x")
    cosine = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
    print(f"cosine bfloat16 vs float32: min {cosine.min():.6f}, 1st percentile {np.percentile(cosine, 1):.6f}, "
          f"mean {cosine.mean():.6f}; texts below 0.999: {(cosine < 0.999).sum()} of {len(texts)}")


if __name__ == "__main__":
    main()
