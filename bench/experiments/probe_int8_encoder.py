"""Probe: the encoder with int8 dynamic quantisation of its linear layers, against today's float32.

Both encode the same cleaned item texts of the bundled data, in one run on this machine, with the
pipeline's batching (texts by token length); reported: texts per second of each and their ratio,
and the cosine of each text's int8 vector with its float32 vector (minimum, 1st percentile,
mean). A cosine below 0.999 changes what the LM routes and the two-tower model see, so a
quantised encoder could only be an opt-in with its quality measured on validation.

    .venv/bin/python -m bench.experiments.probe_int8_encoder [--items 3000] [--threads 2]

Recorded run: bench/results/experiments/probe_int8_encoder.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.ingest.item_text import clean_items  # noqa: E402
from recall_pipeline.core.ingest.sources import load_bundled  # noqa: E402


def timed(encoder: TextEncoder, texts: list[str]) -> tuple[np.ndarray, float]:
    encoder.encode(texts[:64])  # warm up
    started = time.perf_counter()
    vectors = encoder.encode(texts)
    return vectors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items, _ = clean_items(load_bundled(batch_id="probe")[1])
    texts = items["item_text"].to_list()[: args.items]
    exact = TextEncoder(device="cpu")
    quantised = TextEncoder(device="cpu")
    model, _ = quantised.transformer()
    quantised._model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    reference, exact_seconds = timed(exact, texts)
    vectors, int8_seconds = timed(quantised, texts)
    cosine = (reference * vectors).sum(axis=1)
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, {len(texts)} bundled item texts")
    print(f"float32: {len(texts) / exact_seconds:.0f} texts/s; int8 dynamic: {len(texts) / int8_seconds:.0f} texts/s "
          f"({exact_seconds / int8_seconds:.2f}x)")
    print(f"cosine int8 vs float32: min {cosine.min():.4f}, 1st percentile {np.percentile(cosine, 1):.4f}, "
          f"mean {cosine.mean():.4f}; texts below 0.999: {(cosine < 0.999).sum()} of {len(texts)}")


if __name__ == "__main__":
    main()
