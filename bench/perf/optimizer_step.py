"""AdamW's step on the two-tower model's item-id embedding, by implementation, at the catalogue
sizes of the bundled data, M and L.

AdamW is a dense optimiser: every step reads and writes the whole id embedding (items x 128) and
its two moment buffers, however few rows the batch touched. This prints, per size, the mean step
time of torch's CPU default (one parameter at a time), of ``foreach`` (what the trainer uses: all
parameters at once) and of ``fused`` (one kernel), each as a ratio to the default measured in the
same run, and whether its weights after the steps equal the default's bit for bit.

    .venv/bin/python -m bench.perf.optimizer_step [--steps 12]

Recorded runs: bench/results/perf/optimizer_step.txt.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime

import torch

from bench.machine import cpu_name

SIZES = {"bundled": 9_066, "M": 100_000, "L": 1_000_000}
DIM, BATCH = 128, 1024  # two_tower.Architecture.dim, TrainingSettings.batch_size


def steps(n_items: int, count: int, **implementation) -> tuple[float, torch.Tensor]:
    """(mean seconds of an optimiser step after two warm-up steps, the id embedding after ``count`` steps)."""
    torch.manual_seed(0)
    ids, head = torch.nn.Embedding(n_items, DIM), torch.nn.Linear(DIM, DIM)
    optimizer = torch.optim.AdamW([*ids.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.01,
                                  **implementation)
    generator = torch.Generator().manual_seed(1)
    times = []
    for _ in range(count):
        batch = torch.randint(0, n_items, (BATCH,), generator=generator)
        loss = head(ids(batch)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        started = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return sum(times[2:]) / max(len(times) - 2, 1), ids.weight.detach().clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; id embedding x {DIM}, batch {BATCH}, {args.steps} steps")
    for name, n_items in SIZES.items():
        default, reference = steps(n_items, args.steps)
        cells = [f"{name} ({n_items:,} items): default {default * 1000:.1f} ms"]
        for label, implementation in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
            seconds, weights = steps(n_items, args.steps, **implementation)
            cells.append(f"{label} {seconds * 1000:.1f} ms ({seconds / default:.2f}x, "
                         f"{'equal' if torch.equal(weights, reference) else 'not equal'})")
        print(", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
