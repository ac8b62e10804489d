"""Texts encoded per second by the encoder's precisions, and how far their vectors are from the default's.

Each precision is the pipeline's ``TextEncoder`` (texts by token length, batch 64) on the same
cleaned item texts, in one run on this machine, so the ratios are free of machine differences:

- ``float32``: the default;
- ``bfloat16``: bfloat16 linear layers (``core.features.precision``; only where the CPU
  multiplies bfloat16 natively).

Each is timed ``--repeats`` times in alternation and its best time kept. Reported: texts per
second of each, its ratio to ``float32``, and the cosine of each text's vector with its
``float32`` vector over every text (minimum, 1st percentile, mean, how many below 0.999).
The texts are the bundled catalogue's, or with ``--source`` another catalogue's (e.g. one of
``recall-pipeline generate``), ``--items`` of them drawn with a fixed seed.

    .venv/bin/python -m bench.perf.encode_precision [--source S.yaml] [--items 0] [--threads 2] [--repeats 2]

Recorded runs: bench/results/perf/encode_precision.txt.
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

SETTINGS = {"float32": {}, "bfloat16": {"precision": "bfloat16"}}


def item_texts(source: str | None, items: int) -> tuple[list[str], str]:
    """(``items`` cleaned item texts of the catalogue, drawn with seed 0; 0: all of them, in
    catalogue order), and a description of them."""
    if source:
        os.environ["RECALL_PIPELINE_SOURCE"] = source
    from recall_pipeline.resources import data_source_from_env

    data = data_source_from_env()
    cleaned, _ = clean_items(data.load(batch_id="bench")[1], data.id_type, data.genre_separator)
    texts = cleaned["item_text"].to_list()
    where = source or "the bundled catalogue"
    if not items or items >= len(texts):
        return texts, f"all {len(texts)} cleaned item texts of {where}"
    chosen = np.random.default_rng(0).choice(len(texts), size=items, replace=False)
    return [texts[i] for i in chosen], f"{items} of the {len(texts)} cleaned item texts of {where} (seed 0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="a source YAML (default: the bundled data)")
    parser.add_argument("--items", type=int, default=0, help="N item texts drawn with seed 0 (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts, described = item_texts(args.source, args.items)
    variants = [v for v in SETTINGS if v != "bfloat16" or native_bfloat16("cpu")]
    if len(variants) < len(SETTINGS):
        print("# bfloat16 left out: this CPU has no native bfloat16")
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"# {described}, batch 64, best of {args.repeats} (alternating)")
    encoders = {v: TextEncoder(device="cpu", num_threads=args.threads, **SETTINGS[v]) for v in variants}
    best = {v: float("inf") for v in encoders}
    vectors = {}
    for encoder in encoders.values():
        encoder.encode(texts[:64])  # load and warm up
    for _ in range(args.repeats):
        for variant, encoder in encoders.items():
            started = time.perf_counter()
            vectors[variant] = encoder.encode(texts)
            best[variant] = min(best[variant], time.perf_counter() - started)
    for variant, seconds in best.items():
        line = f"{variant:<9} {len(texts) / seconds:8.1f} texts/s  ({seconds:.1f} s)  {best['float32'] / seconds:.2f}x"
        if variant != "float32":
            cosine = (vectors["float32"] * vectors[variant]).sum(axis=1)
            line += (f"  cosine to float32: min {cosine.min():.7f}, 1st percentile {np.percentile(cosine, 1):.7f}, "
                     f"mean {cosine.mean():.7f}; below 0.999: {(cosine < 0.999).sum()}")
        print(line)


if __name__ == "__main__":
    main()
