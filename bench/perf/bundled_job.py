"""The bundled job's time, this checkout against a reference commit, side by side on one machine.

Each round runs ``recall-pipeline run`` on the bundled data in a fresh home, first the reference
commit's code (a git worktree, imported ahead of this checkout), then this checkout's, with the
environment of ``make run``; the rounds alternate so that a machine's slow minutes fall on both.
Reported per run: the job's seconds and the slowest steps; then the ratio of the medians and
whether the two sides' ``eval.metrics`` agree to the 4th decimal (figure by figure). ``--env``
adds variables to this checkout's runs only (e.g. ``RECALL_PIPELINE_ENCODER_PRECISION=bfloat16``).

    .venv/bin/python -m bench.perf.bundled_job --reference b581703 [--rounds 2] [--env NAME=VALUE]

Recorded runs: bench/results/perf/bundled_job.txt.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import duckdb

from bench.machine import cpu_name

ROOT = Path(__file__).resolve().parents[2]
MAKE_RUN_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
                "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
RUN = "from recall_pipeline.cli import main; raise SystemExit(main(['run']))"


def run_job(code: Path, home: Path, extra: dict[str, str]) -> tuple[float, dict[str, float]]:
    """(job seconds, seconds by step) of one bundled run of the code at ``code`` in ``home``."""
    env = {**os.environ, **MAKE_RUN_ENV, **extra, "RECALL_PIPELINE_HOME": str(home),
           "DAGSTER_HOME": str(home / "dagster"), "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-c", RUN], cwd=code, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the run of {code} failed:\n{out.stderr[-3000:]}")
    job = float(re.search(r"^run \S+: SUCCESS in ([\d.]+)s", out.stdout, re.M).group(1))
    steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (\S+)\s+([\d.]+)s  SUCCESS", out.stdout, re.M)}
    return job, steps


def figures(home: Path) -> dict[tuple, float]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("select model, slice, metric, k, value from eval.metrics").fetchall()
    return {tuple(row[:4]): row[4] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for this checkout's runs")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, {os.cpu_count()} CPUs; bundled `recall-pipeline run`, "
          f"fresh homes, alternating; reference {args.reference}, this checkout {commit}"
          + (f" with {' '.join(args.env)}" if args.env else ""))
    with tempfile.TemporaryDirectory() as scratch:
        reference = Path(scratch) / "reference"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(reference), args.reference], cwd=ROOT, check=True)
        try:
            times: dict[str, list[float]] = {"reference": [], "this": []}
            homes = {}
            for round_ in range(args.rounds):
                for side, code, env in (("reference", reference, {}), ("this", ROOT, extra)):
                    homes[side] = Path(scratch) / f"{side}-{round_}"
                    job, steps = run_job(code, homes[side], env)
                    times[side].append(job)
                    slowest = sorted(steps.items(), key=lambda s: -s[1])[:6]
                    print(f"{side:<9} round {round_ + 1}: job {job:6.1f} s | "
                          + ", ".join(f"{name} {sec:.1f}" for name, sec in slowest), flush=True)
            ratio = statistics.median(times["this"]) / statistics.median(times["reference"])
            print(f"median job: reference {statistics.median(times['reference']):.1f} s, this "
                  f"{statistics.median(times['this']):.1f} s ({ratio:.2f}x)")
            before, after = figures(homes["reference"]), figures(homes["this"])
            moved = sorted(key for key in before if key not in after or round(before[key], 4) != round(after[key], 4))
            print(f"eval.metrics: {len(before)} figures, {len(moved)} differ at the 4th decimal"
                  + "".join(f"\n  {key}: {before[key]:.5f} -> {after.get(key, float('nan')):.5f}" for key in moved))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
