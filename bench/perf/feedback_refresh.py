"""What a feedback refresh costs: the time from the run's start until ``published.duckdb`` holds
the new lists, per step, against the full refresh that filled the home.

Takes a home a full refresh (``recall-pipeline run``) filled and copies it (the original is never
written), drops a feedback file into the copy's inbox (``--users`` users, the first by id with
training history, ``--rows-per-user`` new ratings each of warm items they have not rated, one
day after their last interaction), runs ``feedback_refresh_job`` on the copy's Dagster instance
as the sensor would (``feedback_run_config``), and prints from the instance's event log: the
run's start, each step's duration, when ``published.duckdb`` was replaced, how many users were
recomputed and copied; and the full refresh's wall time and steps from the same event log.

    .venv/bin/python -m bench.perf.feedback_refresh --home .recall [--users 3] [--rows-per-user 1]
        [--evaluation defer|run] [--recompute changed|all] [--work DIR] [--keep]

Recorded runs: bench/results/perf/feedback_refresh.txt (size S), feedback_refresh_M.txt (size M).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import duckdb  # noqa: E402


def feedback_rows(warehouse: Path, users: int, per_user: int) -> list[str]:
    """CSV lines: for the first ``users`` users with training history, ``per_user`` warm items
    each that they have not rated (most rated first), a day after their last interaction."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        chosen = con.execute("""select user_id, max("timestamp") from features.interactions_split
                                group by user_id having count(*) filter (where part = 'train') > 0
                                order by user_id limit ?""", [users]).fetchall()
        popular = [i for (i,) in con.execute("""select s.item_id from features.interactions_split s
            join features.item_sides d using (item_id) where not d.is_cold
            group by s.item_id order by count(*) desc, s.item_id limit 500""").fetchall()]
        lines = []
        for user, last in chosen:
            seen = {i for (i,) in con.execute("select item_id from clean.interactions where user_id = ?",
                                              [user]).fetchall()}
            items = [i for i in popular if i not in seen][:per_user]
            lines += [f"{user},{item},5,{(last + timedelta(days=1, minutes=n)).isoformat()}"
                      for n, item in enumerate(items)]
    return lines


def step_table(instance, run_id: str) -> list[tuple[str, float, str]]:
    steps = sorted(instance.get_run_step_stats(run_id), key=lambda s: s.start_time or 0)
    return [(s.step_key, (s.end_time or 0) - (s.start_time or 0), s.status.value if s.status else "?")
            for s in steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a home a full refresh filled (not written)")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--rows-per-user", type=int, default=1)
    parser.add_argument("--evaluation", choices=["defer", "run"], default="defer")
    parser.add_argument("--recompute", choices=["changed", "all"], help="default: the job's own (auto)")
    parser.add_argument("--work", type=Path, help="where to copy the home (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the copy")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="feedback-bench-", dir=args.work))
    root = work / "home"
    copy_started = time.perf_counter()
    shutil.copytree(args.home, root, symlinks=True)
    copy_seconds = time.perf_counter() - copy_started
    os.environ["RECALL_PIPELINE_HOME"], os.environ["DAGSTER_HOME"] = str(root), str(root / "dagster")

    loading = time.perf_counter()
    import dagster as dg

    from recall_pipeline.definitions import build_definitions
    from recall_pipeline.resources import data_source_from_env
    from recall_pipeline.defs.jobs import feedback_run_config
    from recall_pipeline.settings import HomeLayout

    layout = HomeLayout(root)
    try:
        definitions = build_definitions(layout, data_source_from_env(), args.evaluation)
    except TypeError:  # code from before the feedback refresh was incremental: it always evaluates
        definitions, args.evaluation = build_definitions(layout, data_source_from_env()), "run (always)"
    job = definitions.resolve_job_def("feedback_refresh_job")
    load_seconds = time.perf_counter() - loading
    lines = feedback_rows(layout.warehouse, args.users, args.rows_per_user)
    path = layout.inbox / "bench_feedback.csv"
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(lines) + "\n")
    config = feedback_run_config([str(path)])
    for step in ("recall_candidates", "user_profiles") if args.recompute else ():
        config["ops"][step] = {"config": {"recompute": args.recompute}}
    published_before = layout.published.stat().st_mtime
    with dg.DagsterInstance.get() as instance:
        full = instance.get_runs(dg.RunsFilter(job_name="recall_job", statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
        called = time.time()
        result = job.execute_in_process(instance=instance, run_config=config)
        returned = time.time()
        stats = instance.get_run_stats(result.run_id)
        steps = step_table(instance, result.run_id)
        full_steps = step_table(instance, full[0].run_id) if full else []
        full_stats = instance.get_run_stats(full[0].run_id) if full else None
    published = layout.published.stat().st_mtime
    recall_meta = {k: v.value for k, v in result.asset_materializations_for_node("recall_candidates")[0].metadata.items()}
    profile_meta = {k: v.value for k, v in result.asset_materializations_for_node("user_profiles")[0].metadata.items()}

    print(f"# bench.perf.feedback_refresh, {datetime.now():%Y-%m-%d %H:%M}, {platform.node()} ({os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end); home {args.home} (copied in {copy_seconds:.0f} s)")
    print(f"# code: {Path(__import__('recall_pipeline').__file__).parent}; feedback: {len(lines)} rows, {args.users} "
          f"users x {args.rows_per_user}; evaluation {args.evaluation}, recompute {args.recompute or 'auto'}; run "
          f"{'succeeded' if result.success else 'FAILED'}")
    print(f"definitions loaded in {load_seconds:.1f} s (once per run worker)")
    print(f"run start -> published.duckdb replaced: {published - stats.start_time:.1f} s "
          f"(published {'updated' if published > published_before else 'NOT updated'})")
    print(f"run start -> run end: {stats.end_time - stats.start_time:.1f} s; execute_in_process call: "
          f"{returned - called:.1f} s")
    print(f"recall_candidates: {recall_meta.get('users_recomputed', recall_meta.get('users'))} users recomputed, "
          f"{recall_meta.get('users_copied', 0)} copied ({recall_meta.get('recompute_reason', 'every user')})")
    print(f"user_profiles: {profile_meta.get('profiles_built', profile_meta['dagster/row_count'])} profiles built, "
          f"{profile_meta['dagster/row_count']} in all")
    print("steps of the feedback refresh:")
    for key, seconds, status in steps:
        print(f"  {key:<28} {seconds:7.1f} s  {status}")
    if full_stats:
        full_wall = full_stats.end_time - full_stats.start_time
        print(f"the full refresh {full[0].run_id[:8]} in this home: {full_wall:.1f} s; the feedback refresh "
              f"(run start -> end) is {100 * (stats.end_time - stats.start_time) / full_wall:.1f}% of it")
        for key, seconds, status in full_steps:
            print(f"  {key:<28} {seconds:7.1f} s  {status}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"# kept {root}")


if __name__ == "__main__":
    main()
