"""One stage of the graph (or a few, in order), this checkout against a reference commit, side by
side on one home.

A full run fills ``--home`` once; each round then copies it twice and materializes ``--stage``
alone in each copy (several stages: one after the other) (``bench.perf.scale``'s child: the stage's Dagster steps timed from the event
log, the process's peak memory), first with the reference commit's code (a git worktree), then
with this checkout's, so that both read the same inputs and a machine's slow minutes fall on
both. Then what the stage produced is compared:

- ``route_settings``: the chosen settings, and every figure of the choice's record (times aside);
- ``evaluation_report``: every ``eval.metrics`` figure of the run, to the 4th decimal;
- any other stage: nothing (times only).

    .venv/bin/python -m bench.perf.stage_side_by_side --home /tmp/fusion/homes/M --stage route_settings \\
        --reference 1d049c5 [--rounds 2]

``--again``: this checkout then materializes the stages a second time in its copy, as a nightly
run on unchanged data would (what a stage keeps between runs, e.g. its encoded sentences, is
then there); the reference is timed once.

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


def _compare(before: dict, after: dict) -> None:
    moved = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    print(f"  outputs: {len(before)} values compared, {len(moved)} differ"
          + "".join(f"\n  {key}: {before.get(key)} -> {after.get(key)}" for key in moved[:40]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, type=Path, help="a home a full run filled (left unchanged)")
    parser.add_argument("--stage", required=True, nargs="+", help="the asset(s) to materialize, e.g. route_settings")
    parser.add_argument("--reference", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--again", action="store_true", help="this checkout: the stages a second time in its copy")
    parser.add_argument("--scratch", type=Path, help="where the copies go (default: a temporary folder)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, {os.cpu_count()} CPUs; {' then '.join(args.stage)} alone on copies of "
          f"{args.home}, alternating{', this checkout twice' if args.again else ''}; reference {args.reference}, this checkout {commit}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        reference = Path(scratch) / "reference"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(reference), args.reference], cwd=ROOT, check=True)
        try:
            sides = [("reference", reference, 1), ("this", ROOT, 2 if args.again else 1)]
            times: dict[str, list[float]] = {}
            produced = {}
            for round_ in range(args.rounds):
                for side, code, passes in sides:
                    home = Path(scratch) / f"home-{side}"
                    shutil.rmtree(home, ignore_errors=True)
                    shutil.copytree(args.home, home, symlinks=True)
                    for pass_ in range(passes):
                        name = side if pass_ == 0 else f"{side}, again"
                        for stage in args.stage:
                            result = run_stage(code, home, stage)
                            times.setdefault(f"{name}: {stage}", []).append(result["seconds"])
                            produced[(name, stage)] = outputs(home, stage)
                            print(f"{name:<12} round {round_ + 1}: {stage} {result['seconds']:7.1f} s, "
                                  f"peak {result['peak_mb']} MiB", flush=True)
                    shutil.rmtree(home)
            for stage in args.stage:
                reference_s = statistics.median(times[f"reference: {stage}"])
                for name in [n for n, *_ in sides[1:]] + (["this, again"] if args.again else []):
                    this_s = statistics.median(times[f"{name}: {stage}"])
                    print(f"{stage} median: reference {reference_s:.1f} s, {name} {this_s:.1f} s "
                          f"({this_s / reference_s:.2f}x)")
                    _compare(produced[("reference", stage)], produced[(name, stage)])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
