"""How far a planted feedback attack pushes its target into honest users' recall lists, by size,
with the burst guard (``core.ingest.bursts``) and without it.

One full run on a slice of the bundled data; then, for each attack and target, the feedback
refresh's recall stage recomputed with core functions (cleaning with the guard on or off, split,
rating matrix, every route with the champion two-tower model and the stored profiles of the
honest users, fusion), as a feedback refresh under the retraining threshold computes it. An
attack: ``accounts`` new accounts, one a second, each rating the target 5 stars and then
``fillers`` of the ten most rated training items 5 stars, one a second. Targets: the warm items
with exactly one training rating, smallest ids first. Printed: the share of honest users whose
top K holds the target (mean over targets) and the rows the guard quarantined.

    .venv/bin/python -m bench.perf.feedback_burst [--sample-users 14] [--targets 10] [--home DIR]
                                             [--attacks 50x1,50x3,...]   (accounts x fillers)
                                             [--attacks sleeper,camouflaged,slow,trickle]

Recorded run: bench/results/perf/feedback_burst.txt.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.features.split import split_interactions  # noqa: E402
from recall_pipeline.core.ingest.bursts import BurstSettings  # noqa: E402
from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions  # noqa: E402
from recall_pipeline.core.ingest.sources import with_provenance  # noqa: E402
from recall_pipeline.core.recall.recall_candidates import recall, two_tower_route  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings  # noqa: E402

ATTACKS = ((50, 1), (100, 1), (200, 1), (50, 2), (50, 3), (20, 3), (19, 3))
KS = (20, 50, 100)
NAMED = ("sleeper", "camouflaged", "slow", "trickle")
START = datetime(2016, 12, 1, 10, 0, 0)


def full_run(root: Path, sample_users: int) -> None:
    import dagster as dg

    from recall_pipeline.definitions import build_definitions
    from recall_pipeline.resources import DataSource
    from recall_pipeline.settings import HomeLayout

    os.environ.setdefault("DAGSTER_HOME", str(root / "dagster"))
    home = HomeLayout(root).create()
    with dg.instance_for_test() as instance:
        job = build_definitions(home, DataSource(sample_users=sample_users)).resolve_job_def("recall_job")
        assert job.execute_in_process(instance=instance).success


def attack_frame(raw: pl.DataFrame, target: int, popular: list[int], accounts: int, fillers: int) -> pl.DataFrame:
    first = int(raw["user_id"].cast(pl.Int64).max()) + 1000
    rows = []
    for n in range(accounts):
        when = START + timedelta(seconds=n)
        rows.append((first + n, target, 5.0, when))
        rows += [(first + n, popular[(n + f) % len(popular)], 5.0, when + timedelta(seconds=f + 1))
                 for f in range(fillers)]
    return with_feedback(raw, rows)


def with_feedback(raw: pl.DataFrame, rows: list[tuple]) -> pl.DataFrame:
    """``raw`` plus (user, item, rating, time) rows arriving as feedback."""
    frame = pl.DataFrame({"user_id": [str(r[0]) for r in rows], "item_id": [str(r[1]) for r in rows],
                          "rating": [f"{r[2]:g}" for r in rows], "timestamp": [r[3].isoformat() for r in rows]})
    frame = with_provenance(frame, "attack.csv", "feedback-bench").with_columns(
        source_kind=pl.lit("feedback"), event_type=pl.lit(None, pl.String))
    return pl.concat([raw, frame.select(raw.columns)])


DAY, MINUTE = timedelta(days=1), timedelta(minutes=1)


def named_attack(kind: str, raw: pl.DataFrame, target: int, popular: list[int], ordinary: list[int]) -> pl.DataFrame:
    """The attacks an attacker tries against a guard that keys on new accounts (30 accounts unless
    said; ``popular``: the most rated items, ``ordinary``: the next ones):

    - ``sleeper``: each rates 6 popular items over the month before, then all rate the target 5
      stars within 30 minutes, then 4 more ordinary ratings over two days;
    - ``camouflaged``: 30 new accounts over 10 minutes, each rating the target 5 stars and three
      ordinary items 3 stars;
    - ``slow``: 30 new accounts over 6 days, 5 a day, each rating the target 5 stars and two
      popular items 4 stars;
    - ``trickle``: 24 sleepers (6 popular items over the month before), 4 a day over 6 days.
    """
    first, rows = int(raw["user_id"].cast(pl.Int64).max()) + 1000, []

    def sleeper(account: int, n: int, push: datetime, after: int = 4) -> None:
        rows.extend((account, popular[(n + h) % len(popular)], 4.0, push - 30 * DAY + h * 5 * DAY) for h in range(6))
        rows.append((account, target, 5.0, push))
        rows.extend((account, ordinary[(n + h) % len(ordinary)], 3.5, push + (h + 1) * 12 * timedelta(hours=1))
                    for h in range(after))

    for n in range(24 if kind == "trickle" else 30):
        account = first + n
        if kind == "sleeper":
            sleeper(account, n, START + n * MINUTE)
        elif kind == "camouflaged":
            when = START + n * 20 * timedelta(seconds=1)
            rows.append((account, target, 5.0, when))
            rows.extend((account, ordinary[(n + h) % len(ordinary)], 3.0, when + (h + 1) * timedelta(seconds=3))
                        for h in range(3))
        elif kind == "slow":
            when = START + (n // 5) * DAY + (n % 5) * 37 * MINUTE
            rows.append((account, target, 5.0, when))
            rows.extend((account, popular[(n + h) % len(popular)], 4.0, when + (h + 1) * MINUTE) for h in range(2))
        elif kind == "trickle":
            sleeper(account, n, START + (n // 4) * DAY + (n % 4) * 53 * MINUTE, after=0)
        else:
            raise ValueError(f"unknown attack {kind!r}")
    return with_feedback(raw, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample-users", type=int, default=14)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--home", type=Path, help="a home folder a full run already filled (else a new one)")
    parser.add_argument("--attacks", default=",".join(f"{a}x{f}" for a, f in ATTACKS),
                        help="comma-separated ACCOUNTSxFILLERS, or named attacks: sleeper, camouflaged, slow, trickle")
    args = parser.parse_args()
    attacks = [a if a in NAMED else tuple(int(n) for n in a.split("x")) for a in args.attacks.split(",")]

    from recall_pipeline.defs import tables
    from recall_pipeline.resources import PipelineHome, Warehouse

    root = args.home or Path(tempfile.mkdtemp(prefix="burst-bench-"))
    started = time.perf_counter()
    if args.home is None:
        full_run(root, args.sample_users)
    full_seconds = time.perf_counter() - started
    home = PipelineHome(root=str(root))
    warehouse = Warehouse(path=str(home.layout.warehouse))
    parts = tables.staged_parts(home)  # the full run's models
    inputs = tables.recall_inputs(warehouse, parts)
    ids, vectors, encoder = tables.item_vectors(warehouse)
    model, model_index, _ = tables.two_tower_index(parts.two_tower, ids, vectors, encoder)
    raw = warehouse.query("select * from raw.interactions where source_kind <> 'feedback'")
    known = warehouse.query("select item_id from clean.items")["item_id"]
    split = split_interactions(clean_interactions(raw, known, CleaningRules(), datetime.now())[0])
    honest = np.sort(split["user_id"].unique().to_numpy())
    counts = split.filter(pl.col("part") == "train").group_by("item_id").len()
    targets = counts.filter(pl.col("len") == 1)["item_id"].sort().head(args.targets).to_list()
    ranked = counts.sort(["len", "item_id"], descending=[True, False])["item_id"]
    popular, ordinary = ranked.head(10).to_list(), ranked.slice(10, 40).to_list()

    def lists(raw_rows: pl.DataFrame, guard: bool):
        clean, quarantine = clean_interactions(raw_rows, known, CleaningRules(), datetime.now(),
                                               BurstSettings(enabled=guard))
        parts = split_interactions(clean)
        rm = build_rating_matrix(parts, ids)
        train = parts.filter(pl.col("part") == "train")
        merged = recall(dataclasses.replace(inputs, rm=rm, model_route=two_tower_route(model, model_index, train, rm),
                                           item_counts=rm.item_counts()),
                        RouteSettings(), max(KS))
        return rm, merged.items, quarantine.height

    def shares(rm, items, target) -> list[float]:
        rows, column = np.searchsorted(rm.user_ids, honest), np.searchsorted(rm.item_ids, target)
        return [float((items[rows, :k] == column).any(axis=1).mean()) for k in KS]

    rm0, items0, _ = lists(raw, True)
    base = np.mean([shares(rm0, items0, t) for t in targets], axis=0)
    header = " ".join(f"top{k:<4}" for k in KS)
    print(f"# bench.perf.feedback_burst, {datetime.now():%Y-%m-%d}, {platform.node()} ({os.cpu_count()} cores), "
          f"sample_users={args.sample_users}: {len(honest)} honest users, {len(known)} items; "
          f"mean over {len(targets)} targets {targets}; fillers from the 10 most rated items")
    print(f"# full run {'reused' if args.home else f'{full_seconds:.0f} s'}; share of honest users whose top K holds the target")
    print(f"{'attack':<28} {'guard':<6} {header}  quarantined rows")
    print(f"{'none':<28} {'-':<6} " + " ".join(f"{v:<7.3f}" for v in base) + "  0")
    every_row = clean_interactions(raw, known, CleaningRules(), datetime.now(), BurstSettings(feedback_only=False))[1]
    print(f"# without an attack, the guard looking at every row (feedback_only=False) flags "
          f"{every_row.filter(pl.col('reason') == 'suspected_burst').height} of {raw.height} rows")
    for attack in attacks:
        for guard in (False, True):
            results, held, sizes = [], [], []
            for target in targets:
                attacked = (named_attack(attack, raw, target, popular, ordinary) if attack in NAMED
                            else attack_frame(raw, target, popular, *attack))
                rm, items, quarantined = lists(attacked, guard)
                results.append(shares(rm, items, target))
                held.append(quarantined)
                sizes.append(attacked.height - raw.height)
            name = (attack if attack in NAMED else
                    f"{attack[0]} x (target + {attack[1]} filler{'s' if attack[1] > 1 else ''})")
            print(f"{name:<28} {'on' if guard else 'off':<6} "
                  + " ".join(f"{v:<7.3f}" for v in np.mean(results, axis=0))
                  + f"  {int(np.mean(held))} of {int(np.mean(sizes))}")
    print(f"# {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
