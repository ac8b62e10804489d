"""The fault table (docs/operations.md): each fault done for real, one row each.

Faults 1-5 use real `recall-pipeline` processes on one temporary home (sampled runs,
``--sample-users 8``), one after the other: each fault's "next run" is the following fault's
previous, published run. 1-3: SIGKILL during encoding (the item_embeddings progress bar: the
first run had 6 users, so the killed run has new items to encode), during training
(recall_model's first validation epoch) and during publishing (published_warehouse's
STEP_START, read from the Dagster event log); then the next run, its recovery line, and the
published copy in between (its bytes and the run it serves, `recall.published_runs`).
4: junk over the LM index file (indexes/items/items.faiss), `recall-pipeline recall --items`,
then the next run and `recall --items` again. 5: an exclusive sqlite lock on the MLflow store
held from before a run starts (5a) or from recall_model's first refit epoch (5b) until the run
ends, then the next run.
6-8 call the library: a planted feedback burst through `clean_interactions`, a half-written
inbox file through the sensor's `settled_files`, and 20 bad input files of our own through the
loaders (`load_interaction_file`, `load_item_file`) and the cleaning.

    .venv/bin/python -m bench.perf.faults [--keep DIR] [--out bench/results/perf/faults.txt]

Recorded run: bench/results/perf/faults.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.settings import HOME_ENV, HomeLayout  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # the repository
CLI = Path(sys.executable).parent / "recall-pipeline"
RUN = ("run", "--sample-users", "8")


@dataclass
class Row:
    fault: str
    done: str
    happened: str
    next_run: str
    unchanged: str
    seconds: float


# --- real processes (the approach of recall_pipeline_tests/subprocesses.py) ---------------------

class Process:
    """`recall-pipeline <args>` on a home, its combined output in a file."""

    def __init__(self, home: HomeLayout, log: Path, *args: str):
        env = {**os.environ, HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home)}
        self.log = log
        with log.open("w") as out:
            self.popen = subprocess.Popen([str(CLI), *args], cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output()):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"exited ({self.popen.returncode}) before {pattern!r}:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"no {pattern!r} within {timeout} s:\n{self.output()[-3000:]}")

    def wait(self, timeout: float = 600) -> int:
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.output().splitlines() if re.search(pattern, line)]

    def last_lines(self, n: int) -> list[str]:
        return self.output().strip().splitlines()[-n:]


def published(home: HomeLayout) -> tuple[str, str]:
    """(sha256 of the read copy's bytes, the run it serves)."""
    digest = hashlib.sha256(home.published.read_bytes()).hexdigest()
    with duckdb.connect(str(home.published), read_only=True) as con:
        served = con.execute("select run_id from recall.published_runs order by published_at desc limit 1").fetchone()[0]
    return digest, served


def run_ok(home: HomeLayout, log: Path, *args: str) -> Process:
    process = Process(home, log, *args)
    if process.wait() != 0:
        raise RuntimeError(f"run failed:\n{process.output()[-3000:]}")
    return process


def outcome(process: Process) -> str:
    return process.lines(r"^run \S+: \w+ in ")[-1]


def step_started(home: HomeLayout, victim: "Process", step: str, timeout: float) -> None:
    """Wait until the victim's run has the STEP_START of ``step`` in the Dagster event log."""
    import dagster as dg

    victim.wait_for(r"- recall_job - [0-9a-f-]{36} -", timeout)
    run_id = killed_run_id(victim)
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        while time.monotonic() < deadline:
            try:
                records = instance.event_log_storage.get_records_for_run(
                    run_id, of_type=dg.DagsterEventType.STEP_START).records
            except Exception:  # noqa: BLE001 - the run's sqlite file is being created or written
                records = []
            if any(r.event_log_entry.step_key == step for r in records):
                return
            time.sleep(0.05)
    raise RuntimeError(f"no STEP_START of {step} within {timeout} s")


def step_finished(home: HomeLayout, step: str, run_id: str) -> bool:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        records = instance.event_log_storage.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    return any(r.event_log_entry.step_key == step for r in records)


def killed_run_id(process: Process) -> str:
    found = re.search(r"- recall_job - ([0-9a-f-]{36}) -", process.output())
    return found.group(1) if found else "?"


def sigkill_fault(home: HomeLayout, logs: Path, name: str, where: str, wait, step: str, args=RUN) -> Row:
    started = time.perf_counter()
    before = published(home)
    victim = Process(home, logs / f"{name}-killed.log", *args)
    wait(victim)
    victim.kill()
    run_id = killed_run_id(victim)
    between = published(home)
    in_step = "" if step_finished(home, step, run_id) else f", before {step}'s STEP_SUCCESS"
    nxt = run_ok(home, logs / f"{name}-next.log", *RUN)
    recovered = nxt.lines(r"recovered run")
    recovery = recovered[0].split("recall-pipeline: ", 1)[-1] if recovered else "(no recovery line)"
    return Row(name, f"SIGKILL {where}{in_step}",
               f"run {run_id[:8]} killed (exit {victim.popen.returncode})",
               f"{outcome(nxt)}; printed: `` {recovery} ``",
               f"{'yes' if between == before else 'NO'} (serves {between[1][:8]}, sha256 {between[0][:10]})",
               time.perf_counter() - started)


def corrupt_index(home: HomeLayout, logs: Path) -> Row:
    started = time.perf_counter()
    before = published(home)
    with duckdb.connect(str(home.published), read_only=True) as con:
        liked = ",".join(str(i) for (i,) in con.execute(
            "select item_id from catalog.items order by item_id limit 3").fetchall())
    index_file = home.item_index / "items.faiss"
    index_file.write_bytes(b"junk, not a FAISS index\n" * 100)
    recall = Process(home, logs / "index-recall.log", "recall", "--items", liked, "-k", "3")
    code = recall.wait()
    error = ("a traceback ending " if "Traceback (most recent call last)" in recall.output() else "") + \
        f"`` {recall.last_lines(1)[0]} ``"
    between = published(home)
    nxt = run_ok(home, logs / "index-next.log", *RUN)
    again = Process(home, logs / "index-recall-again.log", "recall", "--items", liked, "-k", "3")
    served = f"`recall --items` then: exit {again.wait()}, {len(again.output().strip().splitlines())} lines"
    return Row("4. corrupted index file", f"junk over indexes/items/items.faiss; `recall --items {liked}`",
               f"exit {code}: {error}", f"{outcome(nxt)} (faiss_index rebuilt it); {served}",
               f"{'yes' if between == before else 'NO'} (serves {between[1][:8]})",
               time.perf_counter() - started)


def take_lock(lock: sqlite3.Connection, seconds: float = 60.0) -> None:
    """``begin exclusive``, retried while the run itself holds a write lock for a moment."""
    deadline = time.perf_counter() + seconds
    while True:
        try:
            lock.execute("begin exclusive")
            return
        except sqlite3.OperationalError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.05)


def locked_mlflow(home: HomeLayout, logs: Path, name: str, when: str | None) -> Row:
    """An exclusive lock on the MLflow store, taken before the run starts (``when`` None) or once
    its output matches ``when``, held until the run ends; then the next run."""
    started = time.perf_counter()
    before = published(home)
    lock = sqlite3.connect(home.mlflow_db, timeout=0, isolation_level=None)
    try:
        if when is None:
            lock.execute("begin exclusive")
        failed = Process(home, logs / f"{name}-locked.log", *RUN)
        if when is not None:
            failed.wait_for(when, 300)
            take_lock(lock)
        locked_at = time.perf_counter()
        code = failed.wait()
        waited = time.perf_counter() - locked_at
        between = published(home)
    finally:
        if lock.in_transaction:
            lock.execute("rollback")
        lock.close()
    last = [line for line in failed.last_lines(12) if line.startswith(("failed step:", "error:"))]
    nxt = run_ok(home, logs / f"{name}-next.log", *RUN)
    done = ("`begin exclusive` on mlflow/mlflow.db " +
            ("from before the run starts" if when is None else "from recall_model's first refit epoch") +
            " until the run ends")
    return Row(name, done, f"exit {code} {waited:.0f} s after the lock: " +
               " / ".join(f"`` {line[:300]} ``" for line in last),
               f"lock released: {outcome(nxt)}",
               f"{'yes' if between == before else 'NO'} (serves {between[1][:8]})",
               time.perf_counter() - started)


def process_faults(root: Path) -> list[Row]:
    home = HomeLayout(root / "home").create()
    logs = root / "logs"
    logs.mkdir()
    first = run_ok(home, logs / "first.log", "run", "--sample-users", "6")
    print(f"first run (6 users): {outcome(first)}", file=sys.stderr)
    rows = [
        sigkill_fault(home, logs, "1. SIGKILL in encoding", "while item_embeddings encodes (progress bar at 0%)",
                      lambda p: p.wait_for(r"encoding:\s+\d+%", 300), "item_embeddings.encode_item_shard[shard_0]"),
        sigkill_fault(home, logs, "2. SIGKILL in training", "in recall_model's first validation epoch",
                      lambda p: p.wait_for(r"recall_model - validation epoch 1:", 300), "recall_model"),
        sigkill_fault(home, logs, "3. SIGKILL in publishing", "at published_warehouse's STEP_START",
                      lambda p: step_started(home, p, "published_warehouse", 300), "published_warehouse"),
    ]
    for row in rows:
        print(row, file=sys.stderr)
    rows.append(corrupt_index(home, logs))
    print(rows[-1], file=sys.stderr)
    rows.append(locked_mlflow(home, logs, "5a. locked MLflow store", None))
    print(rows[-1], file=sys.stderr)
    rows.append(locked_mlflow(home, logs, "5b. MLflow store locked mid-run", r"recall_model - refit epoch 1:"))
    print(rows[-1], file=sys.stderr)
    return rows


# --- library faults ------------------------------------------------------------------------------

def feedback_burst() -> Row:
    from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions
    from recall_pipeline.core.ingest.item_text import clean_items
    from recall_pipeline.core.ingest.sources import load_bundled, with_provenance

    started = time.perf_counter()
    raw, raw_items = load_bundled("bench", sample_users=8)
    raw = raw.with_columns(source_kind=pl.lit("bundled"))
    known = clean_items(raw_items)[0]["item_id"]
    counts = raw.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])
    target, popular = counts["item_id"][-1], counts["item_id"].head(10).to_list()
    first, start = 100_000, datetime(2016, 12, 1, 10)
    rows = []
    for n in range(50):  # 50 new accounts, one a second: the target 5 stars, then one popular item
        rows += [(first + n, target, start + timedelta(seconds=n)),
                 (first + n, popular[n % 10], start + timedelta(seconds=n + 1))]
    attack = pl.DataFrame({"user_id": [str(r[0]) for r in rows], "item_id": [str(r[1]) for r in rows],
                           "rating": ["5"] * len(rows), "timestamp": [r[2].isoformat() for r in rows]})
    attack = with_provenance(attack, "inbox/attack.csv", "feedback-bench").with_columns(
        source_kind=pl.lit("feedback"))
    planted = pl.concat([raw, attack.select(raw.columns)])
    clean, quarantine = clean_interactions(planted, known, CleaningRules(), datetime.now())
    reasons = dict(quarantine.group_by("reason").len().iter_rows())
    detail = quarantine.filter(pl.col("reason") == "suspected_burst")["detail"].head(1).to_list()
    balanced = planted.height == clean.height + quarantine.height
    return Row("6. feedback burst", f"{len(rows)} feedback rows planted: 50 new accounts rate item {target} "
               "5 stars within 50 s, each then one popular item",
               f"quarantined {reasons}; e.g. `{detail[0] if detail else ''}`",
               f"raw {planted.height} = clean {clean.height} + quarantined {quarantine.height}: "
               f"{'yes' if balanced else 'NO'}", "n/a (library call)", time.perf_counter() - started)


def half_written_inbox(root: Path) -> Row:
    from recall_pipeline.core.ingest.feedback import settled_files

    started = time.perf_counter()
    inbox = root / "inbox"
    inbox.mkdir()
    path, part = inbox / "feedback.csv", inbox / "later.csv.part"
    path.write_text("user_id,item_id,rating,timestamp\n1,31,4,2016-12-01T10:00:00\n")
    part.write_text("user_id,item_id,rating,timestamp\n")
    seen: dict = {}
    ticks = []
    taken, seen = settled_files(inbox, seen)  # tick 1: first half written
    ticks.append(len(taken))
    with path.open("a") as out:
        out.write("1,1029,3,2016-12-01T10:00:05\n")
    taken, seen = settled_files(inbox, seen)  # tick 2: it grew
    ticks.append(len(taken))
    taken, seen = settled_files(inbox, seen)  # tick 3: unchanged since tick 2
    ticks.append([p.name for p in taken])
    return Row("7. half-written inbox file", "feedback.csv written in two parts between sensor ticks "
               "(`settled_files`), plus later.csv.part",
               f"tick 1 (half): {ticks[0]} taken; tick 2 (grew): {ticks[1]} taken; "
               f"tick 3 (unchanged): {ticks[2]} taken; the .part never",
               "the file is taken whole, one tick after writing stopped", "n/a (library call)",
               time.perf_counter() - started)


HEADER = "who,what,stars,when"
GOOD = ["ann,m1,4,2020-01-01T10:00:00", "bob,m2,5,2020-01-02T10:00:00", "cy,m3,3,2020-01-03T10:00:00"]


def bad_inputs(root: Path) -> list[Row]:
    """20 bad files: (name, file name, content, kind, encoding)."""
    from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions
    from recall_pipeline.core.ingest.item_text import clean_items
    from recall_pipeline.core.ingest.sources import (InteractionColumns, ItemColumns, SourceError,
                                                    load_interaction_file, load_item_file)

    folder = root / "bad"
    folder.mkdir()
    columns = InteractionColumns(user_id="who", item_id="what", rating="stars", timestamp="when")
    item_columns = ItemColumns(item_id="sku", title="name", year=None, genres=None)
    known = pl.Series(["m1", "m2", "m3"])
    lines = lambda *rows: "\n".join([HEADER, *rows]) + "\n"  # noqa: E731
    list_parquet = folder / "list_column.parquet"
    pl.DataFrame({"who": ["ann"], "what": [["m1", "m2"]], "stars": ["4"], "when": ["2020-01-01"]}).write_parquet(
        list_parquet)
    cases = [
        ("missing column", "no_rating.csv", "who,what,when\nann,m1,2020-01-01\n", "events", None),
        ("header, no rows", "header_only.csv", HEADER + "\n", "events", None),
        ("empty file", "empty.csv", "", "events", None),
        ("wrong delimiter (;)", "semicolons.csv", lines(*GOOD).replace(",", ";"), "events", None),
        ("Latin-1 bytes, no `encoding`", "latin1.csv",
         lines(*GOOD, "zoë,m1,4,2020-01-04T10:00:00").encode("latin-1"), "events", None),
        ("unknown `encoding` setting", "good_bad_codec.csv", lines(*GOOD), "events", "klingon-8"),
        ("non-numeric ratings (all)", "stars_words.csv",
         lines(*(g.replace(",4,", ",four,").replace(",5,", ",five,").replace(",3,", ",three,") for g in GOOD)),
         "events", None),
        ("some non-numeric ratings", "stars_some.csv", lines(*GOOD, "ann,m2,great,2020-01-05T10:00:00"),
         "events", None),
        ("ratings out of range", "stars_range.csv", lines(*GOOD, "bob,m1,7,2020-01-05", "cy,m1,-1,2020-01-05"),
         "events", None),
        ("future timestamps", "future.csv", lines(*GOOD, "ann,m2,4,2099-01-01T00:00:00"), "events", None),
        ("epoch milliseconds read as seconds", "epoch_ms.csv",
         lines("ann,m1,4,1577872800000", "bob,m2,5,1577959200000"), "events", None),
        ("unparseable timestamps (some)", "bad_dates.csv", lines(*GOOD, "bob,m3,4,31/02/2020"), "events", None),
        ("unknown items", "unknown_items.csv", lines(*GOOD, "ann,m9,4,2020-01-04", "bob,zz,2,2020-01-04"),
         "events", None),
        ("duplicate rows", "duplicates.csv", lines(*GOOD, GOOD[0], GOOD[0]), "events", None),
        ("empty ids", "empty_ids.csv", lines(*GOOD, ",m1,4,2020-01-04", "ann,,4,2020-01-04", " ,m2,3,2020-01-04"),
         "events", None),
        ("Parquet list column", list_parquet.name, None, "events", None),
        ("junk bytes named .parquet", "junk.parquet", b"PAR1 this is not parquet", "events", None),
        ("unsupported type (.xlsx)", "events.xlsx", b"PK\x03\x04", "events", None),
        ("items: missing id column", "items_no_sku.csv", "id,name\nm1,Alien\n", "items", None),
        ("items: blank and bad int ids", "items_bad_ids.csv", "sku,name\n1,Alien\n,Heat\nm3,Up\n2,Toy Story\n",
         "items_int", None),
    ]
    rows = []
    for n, (name, file_name, content, kind, encoding) in enumerate(cases, start=1):
        started = time.perf_counter()
        path = folder / file_name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        try:
            if kind == "events":
                raw = load_interaction_file(path, columns, "bench", encoding or "utf-8")
                clean, quarantine = clean_interactions(raw, known, CleaningRules(id_type="str"), datetime.now())
            else:
                raw = load_item_file(path, item_columns, "bench")
                clean, quarantine = clean_items(raw, id_type="int" if kind == "items_int" else "str")
        except SourceError as exc:
            happened, balance = f"SourceError: `` {str(exc).replace(str(folder) + '/', '')} ``", "stopped before cleaning"
        else:
            reasons = dict(quarantine.group_by("reason").len().sort("reason").iter_rows()) if quarantine.height else {}
            first = quarantine.row(0, named=True) if quarantine.height else None
            where = f"; row {first['source_row']}: {first.get('detail') or first['reason']}" if first else ""
            happened = f"quarantined {reasons}{where}" if reasons else "nothing quarantined"
            kept = int(clean["source_rows"].sum()) if "source_rows" in clean.columns else clean.height
            balance = (f"raw {raw.height} = clean {kept} + quarantined {quarantine.height}: "
                       f"{'yes' if raw.height == kept + quarantine.height else 'NO'}")
        rows.append(Row(f"8.{n:02d} {name}", file_name + (f" (encoding: {encoding})" if encoding else ""),
                        happened, balance, "n/a (library call)", time.perf_counter() - started))
    return rows


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "perf" / "faults.txt")
    parser.add_argument("--keep", type=Path, help="a folder for the homes and logs (kept); else a temporary one")
    parser.add_argument("--skip-runs", action="store_true", help="only the library faults (6-8)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="faults-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [] if args.skip_runs else process_faults(root)
    rows += [feedback_burst(), half_written_inbox(root), *bad_inputs(root)]
    total = time.perf_counter() - started
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [f"{datetime.now():%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
             f"{memory:.0f} GiB, no GPU; faults 1-5: `recall-pipeline run --sample-users 8`, one home; "
             f"total {total:.0f} s", "",
             "| fault | what was done | what happened | next run | published copy unchanged? | s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {cell(r.fault)} | {cell(r.done)} | {cell(r.happened)} | {cell(r.next_run)} | "
              f"{cell(r.unchanged)} | {r.seconds:.1f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.skip_runs:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
