"""The per-run fusion on catalogues that differ: each one generated, run end to end with the README's
command into a home of its own, then tabulated from its tables (test figures of ``final``, every
route alone and plain EASE; the settings ``route_settings`` chose on the validation cut; the
search's time).

Catalogues (``--catalogues``, any of):
- ``bundled``: the bundled MovieLens data;
- ``S``, ``M``, ``L``: the generator at those sizes (README: ``recall-pipeline generate``; the
  recorded L figures come from a per-stage run of ``bench.perf.scale``, its home linked to
  ``<work>/homes/L`` and tabulated with ``--report-only``);
- ``nosignal``: 2,000 users, 10,000 items, 100,000 interactions whose titles and genres say
  nothing about the taste clusters (``--no-text-signal``): the LM routes are noise there;
- ``nosignal-implicit``: the same interactions as implicit feedback (``rating: null``);
- ``wide``, ``nosignal-small``, ``dense``: shapes, cluster counts and seeds no setting was chosen
  on (3,000 users over 30,000 items; 1,500 users over 8,000 items with text that says nothing;
  8,000 users over 3,000 items, 25 interactions each on average, four clusters); any name with
  ``-implicit`` appended runs that catalogue as implicit feedback.

    .venv/bin/python -m bench.tuning.fusion_catalogues --work /tmp/fusion --catalogues bundled S nosignal

Recorded runs: bench/results/tuning/fusion_catalogues.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import yaml

BIN = Path(sys.executable).parent
GENERATED = {"S": ["--size", "S"], "M": ["--size", "M"], "L": ["--size", "L"],
             "nosignal": ["--users", "2000", "--items", "10000", "--interactions", "100000", "--no-text-signal"],
             "wide": ["--users", "3000", "--items", "30000", "--interactions", "150000", "--clusters", "8", "--seed", "11"],
             "nosignal-small": ["--users", "1500", "--items", "8000", "--interactions", "80000", "--clusters", "12",
                                "--seed", "5", "--no-text-signal"],
             "dense": ["--users", "8000", "--items", "3000", "--interactions", "200000", "--clusters", "4", "--seed", "23"]}
MODELS = ("final", "route:ease", "route:two_tower", "route:lm_profile", "route:lm_interest", "route:text_cf", "EASE",
          "ItemKNN", "MostPopular")


def source_for(name: str, work: Path) -> Path | None:
    """The source.yaml of catalogue ``name`` (generated once into ``work``; None: bundled)."""
    if name == "bundled":
        return None
    base = name.removesuffix("-implicit")
    folder = work / "sources" / base
    if not (folder / "source.yaml").exists():
        subprocess.run([str(BIN / "recall-pipeline"), "generate", "--out", str(folder), *GENERATED[base]], check=True)
    if not name.endswith("-implicit"):
        return folder / "source.yaml"
    settings = yaml.safe_load((folder / "source.yaml").read_text())
    settings["interaction_columns"]["rating"] = None
    implicit = folder / "source_implicit.yaml"
    implicit.write_text(yaml.safe_dump(settings))
    return implicit


def run(name: str, work: Path, train_seconds: int) -> float:
    """Run the job on catalogue ``name`` into ``work/homes/<name>``; the wall seconds."""
    home = work / "homes" / name
    env = {**os.environ, "RECALL_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    command = [str(BIN / "recall-pipeline"), "run"]
    source = source_for(name, work)
    if source is not None:
        command += ["--source", str(source)]
    if train_seconds and source is not None:  # the bundled data runs as `make run` does
        command += ["--max-train-seconds", str(train_seconds)]
    started = time.monotonic()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def table(name: str, work: Path) -> tuple[pl.DataFrame, dict]:
    """(test figures per model, the stored choice) of the catalogue's latest evaluation."""
    home = work / "homes" / name
    with duckdb.connect(str(home / "published.duckdb"), read_only=True) as con:
        rows = con.sql("select model, slice, metric, k, value from eval.metrics where run_id = "
                       "(select run_id from eval.metrics order by created_at desc limit 1)").pl()
    wanted = {("warm", "recall", 50): "R@50", ("warm", "ndcg", 10): "NDCG@10", ("warm", "coverage", 50): "cov@50",
              ("warm", "long_tail", 50): "tail@50", ("cold", "recall", 20): "cold R@20"}
    out = []
    for model in MODELS:
        mine = rows.filter(pl.col("model") == model)
        if mine.is_empty():
            continue
        figures = {label: mine.filter((pl.col("slice") == s) & (pl.col("metric") == m) & (pl.col("k") == k))["value"]
                   for (s, m, k), label in wanted.items()}
        out.append({"model": model, **{label: round(v[0], 4) if len(v) else None for label, v in figures.items()}})
    choice = json.loads((home / "models" / "route_settings" / "route_settings.json").read_text())
    return pl.DataFrame(out), choice


def cold_choice(name: str, work: Path) -> str:
    """What ranks the catalogue's cold items (``text_cf_model``'s choice on pseudo-cold validation)."""
    path = work / "homes" / name / "models" / "text_cf" / "text_cf.npz"
    if not path.exists():
        return "no TextCF model stored"
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
    margin = meta.get("pseudo_cold_margin")
    lead = (f", {margin['gain']:+.4f} over {margin['runner_up']} (95% lower bound {margin['lower_bound']:+.4f})"
            if margin else "")
    return (f"{meta.get('cold_scorer', 'text_cf')} (TextCF blend {meta['blend']}), pseudo-cold Recall@20 "
            f"{meta['pseudo_cold_recall@20']:.4f}{lead}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--catalogues", nargs="+", default=["bundled", "S", "nosignal", "nosignal-implicit"])
    parser.add_argument("--max-train-seconds", type=int, default=600)
    parser.add_argument("--report-only", action="store_true", help="tabulate homes already run")
    args = parser.parse_args()
    for name in args.catalogues:
        wall = None if args.report_only else run(name, args.work, args.max_train_seconds)
        figures, choice = table(name, args.work)
        settings, record = json.loads(choice["settings"]), choice["record"]
        print(f"\n## {name}" + (f" (job and setup {wall:.0f} s)" if wall else ""))
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_column_data_types=True):
            print(figures)
        print(f"chosen: {record.get('decision', choice['how'])}")
        print(f"  cold items ranked by: {cold_choice(name, args.work)}")
        print(f"  weights {settings['weights']}, discount {settings['popularity_discount']}, rrf_c {settings['rrf_c']}, "
              f"EASE recency tau {settings['ease_recency_tau']}, window weight {settings['ease_window_weight']}")
        if record:
            print(f"  validation: chosen {record['chosen']}, start {record['start']}, floors {record['floors']}")
            print(f"  search: {len(record['candidates'])} candidates, {record['seconds']} s, {record['users']} users, "
                  f"left out {record.get('left_out') or 'none'}")


if __name__ == "__main__":
    main()
