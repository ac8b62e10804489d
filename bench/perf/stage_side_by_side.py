"""One stage of the graph, this checkout against a reference commit, side by side on one home.

A full run fills ``--home`` once; each round then copies it twice and materializes ``--stage``
alone in each copy (``bench.perf.scale``'s child: the stage's Dagster steps timed from the event
log, the process's peak memory), first with the reference commit's code (a git worktree), then
with this checkout's, so that both read the same inputs and a machine's slow minutes fall on
both. Then what the stage produced is compared:

- ``route_settings``: the chosen settings, and every figure of the choice's record (times aside);
- ``evaluation_report``: every ``eval.metrics`` figure of the run, to the 4th decimal;
- any other stage: nothing (times only).

    .venv/bin/python -m bench.perf.stage_side_by_side --home /tmp/fusion/homes/M --stage route_settings \\
        --reference 1d049c5 [--rounds 2]

Recorded runs: bench/results/perf/stage_side_by_side.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import duckdb

from bench.machine import cpu_name
from bench.perf.bundled_job import MAKE_RUN_ENV
from bench.perf.scale import _last_json

ROOT = Path(__file__).resolve().parents[2]


def run_stage(code: Path, home: Path, stage: str) -> dict:
    """{seconds, peak_mb, ...} of ``stage`` materialized alone by the code at ``code`` in ``home``."""
    env = {**os.environ, **MAKE_RUN_ENV, "RECALL_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-m", "bench.perf.scale", "--child", stage], cwd=code, env=env,
                         capture_output=True, text=True)
    result = _last_json(out.stdout)
    if out.returncode or not result or not result["success"]:
        raise RuntimeError(f"{stage} with the code at {code} failed:\n{out.stderr[-3000:]}")
    return result


def outputs(home: Path, stage: str) -> dict:
    """What ``stage`` produced in ``home``, as comparable values (empty: not compared)."""
    if stage == "route_settings":
        stored = json.loads((home / "models" / "route_settings" / "route_settings.json").read_text())
        return {"settings": json.dumps(stored["settings"], sort_keys=True), **_numbers(stored["record"], "record")}
    if stage == "evaluation_report":
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            rows = con.execute("select model, slice, metric, k, value from eval.metrics where run_id = "
                               "(select run_id from eval.metrics order by created_at desc limit 1)").fetchall()
        return {" ".join(map(str, row[:4])): round(row[4], 4) for row in rows}
    return {}


def _numbers(value, path: str) -> dict:
    """Every number and string of a nested record by its path, leaving out times."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if "second" not in key and "time" not in key
                for k, v in _numbers(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{path}[{i}]").items()}
    return {path: round(value, 4) if isinstance(value, float) else value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path, help="a home a full run filled (left unchanged)")
    parser.add_argument("--stage", required=True, help="the asset to materialize, e.g. route_settings")
    parser.add_argument("--reference", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scratch", type=Path, help="where the copies go (default: a temporary folder)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, {os.cpu_count()} CPUs; {args.stage} alone on copies of "
          f"{args.home}, alternating; reference {args.reference}, this checkout {commit}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        reference = Path(scratch) / "reference"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(reference), args.reference], cwd=ROOT, check=True)
        try:
            times: dict[str, list[float]] = {"reference": [], "this": []}
            produced = {}
            for round_ in range(args.rounds):
                for side, code in (("reference", reference), ("this", ROOT)):
                    home = Path(scratch) / f"home-{side}"
                    shutil.rmtree(home, ignore_errors=True)
                    shutil.copytree(args.home, home, symlinks=True)
                    result = run_stage(code, home, args.stage)
                    times[side].append(result["seconds"])
                    produced[side] = outputs(home, args.stage)
                    print(f"{side:<9} round {round_ + 1}: {result['seconds']:7.1f} s, peak {result['peak_mb']} MiB",
                          flush=True)
                    shutil.rmtree(home)
            ratio = statistics.median(times["this"]) / statistics.median(times["reference"])
            print(f"median: reference {statistics.median(times['reference']):.1f} s, this "
                  f"{statistics.median(times['this']):.1f} s ({ratio:.2f}x)")
            before, after = produced["reference"], produced["this"]
            moved = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
            print(f"outputs: {len(before)} values compared, {len(moved)} differ"
                  + "".join(f"\n  {key}: {before.get(key)} -> {after.get(key)}" for key in moved[:40]))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
