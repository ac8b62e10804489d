"""Per-stage wall time and peak memory of the whole graph at several sizes, and how each grows.

    .venv/bin/python -m bench.perf.scale --sizes S M [--work /tmp/scale] [--recall-model-config '{"max_train_seconds": 600}']

For each size the synthetic source of ``recall-pipeline generate`` is written (once), then every
asset of ``recall_job`` is materialized in order, **each in a process of its own**, against one
home folder, so that each stage's peak resident memory is its own: the process's ``VmHWM``
(``ru_maxrss`` would carry the parent's peak across exec). A stage's time is the sum of its
Dagster steps' times from the event log (imports and process start-up excluded); ``base_mb``
is the process's resident memory after the imports, before the stage runs.

The growth exponent of a stage between two sizes is log(t2/t1) / log(n2/n1) with n the number of
interactions: 1.0 is linear; the users x K stages (recall, evaluation) grow with users, which
grow like interactions in the generator's sizes. Results are printed as a table and written as
JSON lines next to ``--work`` so that ``--report`` can print the table again without re-running.

Recorded run: bench/results/perf/scale.txt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
STAGES = ("raw_interactions_and_items", "feedback_events", "cleaned_item_text", "cleaned_interactions",
          "rating_matrix", "item_embeddings", "user_profiles", "recall_model", "text_cf_model", "faiss_index",
          "two_tower_index", "route_settings", "ease_model", "recall_candidates", "evaluation_report",
          "published_warehouse")
# a stage's asset keys where they differ from its name (a multi-asset)
STAGE_KEYS = {"raw_interactions_and_items": ("raw_interactions", "raw_items")}
SIZES = {"S": (671, 9_066, 100_004), "M": (20_000, 100_000, 1_000_000), "L": (200_000, 1_000_000, 10_000_000)}


def vm_hwm_mb() -> float:
    """This process's own peak resident memory (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_stage(stage: str, run_config: dict) -> dict:
    """Child process: materialize one asset of the graph (its upstream already in the home)."""
    import dagster as dg

    from recall_pipeline.definitions import build_definitions
    from recall_pipeline.settings import home_layout

    defs = build_definitions(home_layout().create())
    job = defs.resolve_implicit_global_asset_job_def()
    base_mb = vm_rss_mb()
    config = {"ops": {stage: {"config": run_config}}} if run_config else None
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(k) for k in STAGE_KEYS.get(stage, (stage,))],
                                        run_config=config, raise_on_error=False)
        wall = time.perf_counter() - started
        steps = instance.get_run_step_stats(result.run_id)
    step_seconds = sum((s.end_time - s.start_time) for s in steps if s.start_time and s.end_time)
    return {"stage": stage, "success": result.success, "seconds": round(step_seconds, 2),
            "process_seconds": round(wall, 2), "base_mb": round(base_mb), "peak_mb": round(vm_hwm_mb())}


def measure_size(size: str, work: Path, stages: tuple[str, ...], model_config: dict) -> list[dict]:
    """Generate the size's data (once) and run every stage in its own process, in order."""
    data, home = work / size / "data", work / size / "home"
    if not (data / "source.yaml").exists():
        subprocess.run([sys.executable, "-m", "recall_pipeline.cli", "generate", "--size", size,
                        "--out", str(data)], check=True, cwd=ROOT)
    env = {**os.environ, "RECALL_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "RECALL_PIPELINE_SOURCE": str(data / "source.yaml"), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for stage in stages:
        config = model_config if stage == "recall_model" else {}
        child = subprocess.run([sys.executable, "-m", __spec__.name, "--child", stage, "--child-config", json.dumps(config)],
                               env=env, cwd=ROOT, capture_output=True, text=True)
        result = _last_json(child.stdout)
        if child.returncode != 0 or not result or not result["success"]:
            sys.stderr.write(child.stderr[-4000:])
            raise SystemExit(f"{size}: stage {stage} failed (rc {child.returncode})")
        row = {"size": size, **result}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def exponent(t1: float, t2: float, n1: float, n2: float) -> float:
    """log(t2/t1) / log(n2/n1); nan where a time is too small to say."""
    if min(t1, t2) < 0.5:
        return float("nan")
    return math.log(t2 / t1) / math.log(n2 / n1)


def table(rows: list[dict]) -> str:
    """One line per stage: seconds and peak MiB per size, and the growth exponent between sizes."""
    sizes = [s for s in SIZES if any(r["size"] == s for r in rows)]
    by = {(r["size"], r["stage"]): r for r in rows}
    head = ["stage"] + [f"{s} s" for s in sizes] + [f"{s} peak MiB" for s in sizes]
    pairs = list(zip(sizes, sizes[1:]))
    head += [f"exp {a}->{b}" for a, b in pairs]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for stage in STAGES:
        cells = [stage]
        cells += [f"{by[(s, stage)]['seconds']:.1f}" if (s, stage) in by else "" for s in sizes]
        cells += [f"{by[(s, stage)]['peak_mb']}" if (s, stage) in by else "" for s in sizes]
        for a, b in pairs:
            if (a, stage) in by and (b, stage) in by:
                e = exponent(by[(a, stage)]["seconds"], by[(b, stage)]["seconds"], SIZES[a][2], SIZES[b][2])
                cells.append("" if math.isnan(e) else f"{e:.2f}")
            else:
                cells.append("")
        lines.append(" | ".join(cells))
    for s in sizes:
        mine = [r for r in rows if r["size"] == s]
        lines.append(f"{s}: {sum(r['seconds'] for r in mine):.0f} s in stages, "
                     f"{sum(r['process_seconds'] for r in mine):.0f} s with the per-stage process start-up; "
                     f"highest peak {max(r['peak_mb'] for r in mine)} MiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["S", "M"], choices=list(SIZES))
    parser.add_argument("--work", default="/tmp/recall-scale", help="data and homes, one folder per size")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--recall-model-config", default="{}",
                        help='JSON run config of recall_model, e.g. {"max_train_seconds": 900}')
    parser.add_argument("--report", action="store_true", help="print the table of the stored results only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child, json.loads(args.child_config))))
        return
    work = Path(args.work).resolve()
    results = work / "scale_results.jsonl"
    if not args.report:
        work.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            rows = measure_size(size, work, tuple(args.stages), json.loads(args.recall_model_config))
            with results.open("a") as out:
                out.writelines(json.dumps(r) + "\n" for r in rows)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    latest = {(r["size"], r["stage"]): r for r in rows}  # a later run of a stage replaces an earlier one
    print(table(list(latest.values())))


if __name__ == "__main__":
    main()
