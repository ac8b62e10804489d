"""Crash recovery as a user meets it: `recall-pipeline run` in real processes, killed with
SIGKILL, stopped with SIGTERM, or waiting for a slot that another live run holds."""

from __future__ import annotations

import hashlib
import re
import signal
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from recall_pipeline.settings import SLOT_WAIT_ENV, HomeLayout
from recall_pipeline_tests.subprocesses import cli, home_env, slot_holder

SAMPLE = ("run", "--sample-users", "8")
IN_TRAINING = r"recall_model - validation epoch"


@pytest.fixture(scope="module")
def sampled_home(tmp_path_factory) -> HomeLayout:
    """A home with one successful sampled run: its published copy is what the crashes must keep.
    Its path holds a quote and a space: Dagster's storage, DuckDB, MLflow, FAISS and the
    published copy all live under it (no SQL or URI is assembled around a raw path)."""
    home = HomeLayout(tmp_path_factory.mktemp("crash-home") / "it's a home").create()
    first = cli(home, home.root / "first.log", *SAMPLE)
    assert first.wait(timeout=300) == 0, first.output()[-4000:]
    return home


def test_a_home_path_with_a_quote_and_a_space_runs_and_recalls(sampled_home, tmp_path):
    with duckdb.connect(str(sampled_home.published), read_only=True) as con:
        assert con.execute("select count(distinct user_id) from recall.latest").fetchone()[0] == 8
    recalled = cli(sampled_home, tmp_path / "recall.log", "recall", "--items", "1,3,10", "-k", "3")
    assert recalled.wait(timeout=300) == 0, recalled.output()[-4000:]
    assert len([line for line in recalled.output().splitlines() if line.strip()[:1].isdigit()]) == 3


def instance_of(home: HomeLayout) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home.dagster_home))


def published(home: HomeLayout) -> tuple[str, list[tuple]]:
    """The read copy's bytes (hashed) and the run it serves."""
    digest = hashlib.sha256(home.published.read_bytes()).hexdigest()
    with duckdb.connect(str(home.published), read_only=True) as con:
        return digest, con.execute("select distinct run_id from recall.latest").fetchall()


def newest_run(instance: dg.DagsterInstance, job: str = "recall_job") -> dg.DagsterRun:
    return instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)[0]


def slots(instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """(runs holding a warehouse slot, runs with a step queued for one)."""
    info = instance.event_log_storage.get_concurrency_info("warehouse")
    return [s.run_id for s in info.claimed_slots], [p.run_id for p in info.pending_steps]


def test_a_killed_run_never_blocks_the_next(sampled_home, tmp_path):
    """A killed run never blocks the next: SIGKILL during recall_model, then a third run."""
    home = sampled_home
    before = published(home)
    second = cli(home, tmp_path / "second.log", *SAMPLE)
    second.wait_for(IN_TRAINING, timeout=300)
    second.popen.send_signal(signal.SIGKILL)
    second.wait(timeout=30)
    with instance_of(home) as instance:
        killed = newest_run(instance)
        # what used to block every later run: the dead run is STARTED and holds the slot
        assert killed.status == dg.DagsterRunStatus.STARTED
        assert slots(instance)[0] == [killed.run_id]
    assert published(home) == before  # the read copy is intact in between

    third = cli(home, tmp_path / "third.log", *SAMPLE)
    assert third.wait(timeout=300) == 0, third.output()[-4000:]
    out = third.output()
    assert (f"recovered run {killed.run_id} (STARTED, recall-pipeline run, pid {second.pid} on ") in out
    assert f"process {second.pid} is gone): marked FAILURE, freed slots: pool 'warehouse' (step recall_model)" in out
    with instance_of(home) as instance:
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert newest_run(instance).status == dg.DagsterRunStatus.SUCCESS
        assert slots(instance) == ([], [])
        failure = instance.event_log_storage.get_records_for_run(
            killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert "the run's process is gone" in failure[0].event_log_entry.message
        assert published(home)[1] == [(newest_run(instance).run_id,)]


def test_sigterm_stops_a_run_cleanly(sampled_home, tmp_path):
    home = sampled_home
    before = published(home)
    run = cli(home, tmp_path / "terminated.log", *SAMPLE)
    run.wait_for(r"cleaned_item_text - ", timeout=300)  # then cleaning and encoding run
    sent = time.monotonic()
    run.popen.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 30
    assert "received SIGTERM: stopping run" in run.output()
    assert run.last_lines(3)[0] == "the run was stopped: received SIGTERM"
    assert run.last_lines(1)[0].startswith("the published copy (published.duckdb) was not changed")
    with instance_of(home) as instance:
        stopped = newest_run(instance)
        assert stopped.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
        assert slots(instance) == ([], [])
    assert published(home) == before


def cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_slot_wait_names_the_holder_gives_up_stops_on_sigterm_and_outlives_the_holder(tmp_path):
    """A live run holds the warehouse slot while three runs start: one says who holds it and gives
    up after 3 s; one, waiting, stops at once on SIGTERM (Dagster alone ignores it there); the
    last goes on once the holder is killed with SIGKILL, after recovering it."""
    home = HomeLayout(tmp_path / "home").create()
    holder = slot_holder(home_env(home), tmp_path / "holder.log")
    try:
        with instance_of(home) as instance:
            held_by = newest_run(instance, "slot_holder").run_id
        timed = cli(home, tmp_path / "timed.log", *SAMPLE, **{SLOT_WAIT_ENV: "3"})
        waiting = cli(home, tmp_path / "waiting.log", *SAMPLE)
        patient = cli(home, tmp_path / "patient.log", *SAMPLE)
        waiting.wait_for("waits for a slot of pool 'warehouse'", timeout=120)
        cpu_before = cpu_seconds(waiting.pid)
        time.sleep(3)
        assert cpu_seconds(waiting.pid) - cpu_before < 0.5  # it sleeps between claims, no busy wait

        assert timed.wait(timeout=120) == 1, timed.output()[-4000:]
        holder_text = (f"held by run {held_by} (step hold_warehouse_slot, STARTED, recall-pipeline run, "
                       f"pid {holder.pid} on ")
        assert f"step feedback_events waits for a slot of pool 'warehouse', {holder_text}" in timed.output()
        reason, advice, tail = timed.last_lines(3)
        assert reason.startswith("the run was stopped: gave up after waiting ") and holder_text in reason
        assert advice.startswith("next: wait for the run that holds the slot") and SLOT_WAIT_ENV in advice
        assert tail.startswith("the published copy (published.duckdb) was not changed")

        sent = time.monotonic()
        waiting.popen.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=60) == 128 + signal.SIGTERM
        assert time.monotonic() - sent < 15
        assert waiting.last_lines(3)[0] == "the run was stopped: received SIGTERM"
        with instance_of(home) as instance:
            for process, status in ((timed, dg.DagsterRunStatus.FAILURE), (waiting, dg.DagsterRunStatus.CANCELED)):
                run_id = re.search(rf"\nrun (\S+): {status.value} in ", process.output()).group(1)
                assert instance.get_run_by_id(run_id).status == status
            assert slots(instance)[0] == [held_by]  # the live holder is left alone

        patient.wait_for("waits for a slot of pool 'warehouse'", timeout=120)
        holder.popen.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        patient.wait_for(rf"recovered run {held_by} \(STARTED, recall-pipeline run, pid {holder.pid} on .*"
                         # the kill and the reaping race the patient's next look: either verdict
                         rf"process {holder.pid} (is gone|has exited \(not yet reaped by its parent\))\): "
                         r"marked FAILURE", timeout=60)
        patient.wait_for(r"raw_interactions_and_items - loaded", timeout=120)  # it goes on
        patient.popen.send_signal(signal.SIGTERM)
        assert patient.wait(timeout=60) == 128 + signal.SIGTERM
        with instance_of(home) as instance:
            assert instance.get_run_by_id(held_by).status == dg.DagsterRunStatus.FAILURE
            assert slots(instance) == ([], [])
    finally:
        holder.stop()


BAD_SOURCE = """interactions_path: events.csv
items_path: items.csv
id_type: str
interaction_columns: {user_id: who, item_id: what, rating: stars, timestamp: when}
item_columns: {item_id: sku, title: name, year: null, genres: null, description: null}
"""


def test_a_failed_run_ends_with_the_step_the_error_and_what_to_do(tmp_path):
    """The last lines name the failing step and the error's own message."""
    (tmp_path / "items.csv").write_text("sku,name\nm1,Alien\nm2,Heat\n")
    (tmp_path / "events.csv").write_text("who,what,stars,time\nann,m1,4,2020-01-01\n")
    (tmp_path / "source.yaml").write_text(BAD_SOURCE)
    home = HomeLayout(tmp_path / "home").create()
    run = cli(home, tmp_path / "failed.log", "run", "--source", str(tmp_path / "source.yaml"))
    assert run.wait(timeout=180) == 1
    step, error, advice, tail = run.last_lines(4)
    assert step == "failed step: raw_interactions_and_items"
    assert error == (f"error: SourceError: {tmp_path / 'events.csv'}: column 'when' (mapped to timestamp) "
                     "is missing; the file has columns ['who', 'what', 'stars', 'time']")
    assert advice.startswith("next: fix the file or its mapping in the source YAML")
    assert tail.startswith("the published copy (published.duckdb) was not changed; the whole log: `make dev`")


def test_recall_says_when_the_stored_serving_copy_is_stale(sampled_home, monkeypatch, capsys):
    """The CLI no longer falls back silently when the stored index is stale."""
    from recall_pipeline.cli import main as cli_main
    from recall_pipeline.settings import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(sampled_home.root))
    with duckdb.connect(str(sampled_home.warehouse), read_only=True) as con:
        liked = [str(item) for (item,) in con.execute("select item_id from clean.items order by item_id limit 2").fetchall()]
    manifest = sampled_home.serving.current_or_none() / "two_tower" / "manifest.json"
    original = manifest.read_text()
    manifest.write_text(original.replace('"embeddings_sha256": "', '"embeddings_sha256": "stale-'))
    try:
        assert cli_main(["recall", "--items", ",".join(liked), "-k", "3"]) == 0
    finally:
        manifest.write_text(original)
    err = capsys.readouterr().err
    assert f"the stored serving copy in {manifest.parent} does not match the catalogue (" in err
    assert "embeddings checksum differs" in err and "from the MLflow registry instead" in err
