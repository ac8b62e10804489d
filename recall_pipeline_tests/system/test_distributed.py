"""The sharded steps on Dagster's celery executor: two worker processes on this machine (Redis on
127.0.0.1:6379 as broker and result backend), and the same results as the single-process run.

A slice of the bundled data is materialized in one process (home A, shards 1). A copy of that
home (B) then runs ``item_embeddings`` with 40 texts to encode again (the rest reused), and
``recall_candidates`` from A's warehouse, each in 2 shards, with the ``celery`` executor and two ``celery -A recall_pipeline.runtime.celery_worker``
worker processes of one process each, listening on a queue of this test's own. The shard steps
must have run on both workers, the re-encoded vectors must equal A's to 1e-6 and the candidate
lists must be A's (user, rank, item, route and every route's rank).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

# dagster-celery registers its task again at every submission and Celery warns each time
pytestmark = pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")

from recall_pipeline.definitions import build_definitions, recall_job_definition
from recall_pipeline.resources import DataSource
from recall_pipeline.settings import HOME_ENV, SHARDS_ENV, SOURCE_ENV, HomeLayout

SAMPLE_USERS = 6
REENCODED = 40  # item texts whose stored vectors B forgets: the sharded run encodes them again
# a short training: the model only has to exist, both runs serve the same one
TRAINING = {"ops": {"recall_model": {"config": {"max_epochs": 1, "patience": 1}}}}
# every route computed (those fused with weight 0 too), so that each one's lists are compared
ALL_ROUTES = {"ops": {"recall_candidates": {"config": {"compute_zero_weight_routes": True}}}}
SHARDS = 2
REDIS = ("127.0.0.1", 6379)
ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_OF_RECALL = ("raw_interactions", "raw_items", "cleaned_item_text", "cleaned_interactions",
                      "rating_matrix", "item_embeddings", "user_profiles", "recall_model",
                      "faiss_index", "two_tower_index", "recall_candidates")


def redis_reachable() -> bool:
    try:
        socket.create_connection(REDIS, timeout=2).close()
        return True
    except OSError:
        return False


def table(home: HomeLayout, query: str) -> pl.DataFrame:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.sql(query).pl()


def start_worker(name: str, env: dict, log: Path) -> subprocess.Popen:
    """One dagster-celery worker with one process, in a session of its own (stopped as a group)."""
    command = [sys.executable, "-m", "celery", "-A", "recall_pipeline.runtime.celery_worker", "worker",
               "-Q", env["RECALL_PIPELINE_CELERY_QUEUE"], "-c", "1", "--prefetch-multiplier=1",
               "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(worker: subprocess.Popen) -> None:
    """Warm shutdown (SIGTERM to the worker's group), SIGKILL if it lingers; no orphans."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
    try:  # the pool's child processes share the group
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until_ready(logs: list[Path], workers: list[subprocess.Popen], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker, log in zip(workers, logs):
            if worker.poll() is not None:
                raise RuntimeError(f"celery worker exited: {log.read_text()[-2000:]}")
        if all(" ready." in log.read_text() for log in logs):
            return
        time.sleep(0.5)
    raise TimeoutError("celery workers not ready: " + " | ".join(log.read_text()[-500:] for log in logs))


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """Home A materialized in one process up to ``recall_candidates``; home B a copy of it."""
    if not redis_reachable():
        pytest.fail("this test needs Redis on 127.0.0.1:6379 (the celery executor's broker)")
    single = HomeLayout(tmp_path_factory.mktemp("single")).create()
    job = build_definitions(single, DataSource(sample_users=SAMPLE_USERS)).resolve_job_def("recall_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, run_config={"ops": {**TRAINING["ops"], **ALL_ROUTES["ops"]}},
                                        asset_selection=[dg.AssetKey(a) for a in UPSTREAM_OF_RECALL])
    assert result.success
    sharded = HomeLayout(tmp_path_factory.mktemp("celery") / "home")
    shutil.copytree(single.root, sharded.root, ignore=shutil.ignore_patterns("dagster"))
    return single, sharded.create()


@pytest.fixture(scope="module")
def celery_env(homes, tmp_path_factory):
    """The environment of the run's process and of two workers: home B, its Dagster instance,
    the sliced source, the celery executor on Redis and a queue of this test's own."""
    _, sharded = homes
    folder = tmp_path_factory.mktemp("celery-env")
    source = folder / "source.yaml"
    source.write_text(f"sample_users: {SAMPLE_USERS}\n")
    env = {**os.environ, HOME_ENV: str(sharded.root), "DAGSTER_HOME": str(sharded.dagster_home),
           SOURCE_ENV: str(source), "RECALL_PIPELINE_EXECUTOR": "celery",
           "RECALL_PIPELINE_CELERY_BROKER": "redis://127.0.0.1:6379/0",
           "RECALL_PIPELINE_CELERY_QUEUE": f"recall-test-{uuid.uuid4().hex[:12]}",
           SHARDS_ENV: str(SHARDS), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    logs = [folder / f"worker{i}.log" for i in (1, 2)]
    workers = [start_worker(f"recall-w{i}", env, log) for i, log in zip((1, 2), logs)]
    try:
        wait_until_ready(logs, workers)
        yield env
    finally:
        for worker in workers:
            stop(worker)
        assert all(w.poll() is not None for w in workers)


def run_with_celery(env: dict, asset: str, monkeypatch, run_config: dict | None = None) -> dg.ExecuteJobResult:
    """``asset`` of ``recall_job`` with the celery executor, this process coordinating."""
    for key in ("RECALL_PIPELINE_HOME", "DAGSTER_HOME", "RECALL_PIPELINE_SOURCE", "RECALL_PIPELINE_EXECUTOR",
                "RECALL_PIPELINE_CELERY_BROKER", "RECALL_PIPELINE_CELERY_QUEUE", SHARDS_ENV):
        monkeypatch.setenv(key, env[key])
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(recall_job_definition), instance=instance,
                                asset_selection=[dg.AssetKey(asset)], run_config=run_config, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return result


def shard_workers(result: dg.ExecuteJobResult, op: str) -> dict[str, tuple[str, int]]:
    """Per shard step: the celery worker that ran it and the pid its events came from."""
    workers = {e.step_key: str(e.event_specific_data.metadata["Celery worker"].value)
               for e in result.all_events
               if e.event_type_value == "ENGINE_EVENT" and e.step_key and f".{op}[" in e.step_key
               and "Celery worker" in (e.event_specific_data.metadata or {})}
    pids = {e.step_key: e.pid for e in result.all_events
            if e.event_type_value == "STEP_SUCCESS" and e.step_key and f".{op}[" in e.step_key}
    return {step: (workers[step], pids[step]) for step in pids}


def test_sharded_steps_on_two_celery_workers_equal_the_single_process_run(homes, celery_env, monkeypatch):
    single, sharded = homes
    with duckdb.connect(str(sharded.warehouse)) as con:  # these texts are encoded again, in shards
        con.execute("delete from features.item_embeddings where item_id in "
                    f"(select item_id from features.item_embeddings order by hash(item_id) limit {REENCODED})")
    encoding = run_with_celery(celery_env, "item_embeddings", monkeypatch)
    metadata = encoding.asset_materializations_for_node("item_embeddings")[0].metadata
    expected = table(single, "select * from features.item_embeddings order by item_id")
    got = table(sharded, "select * from features.item_embeddings order by item_id")
    assert metadata["shards"].value == SHARDS and metadata["encoded"].value == REENCODED
    assert metadata["reused"].value == got.height - REENCODED and got.height == expected.height > 400
    assert got.select("item_id", "text_hash", "model").equals(expected.select("item_id", "text_hash", "model"))
    difference = np.abs(got["embedding"].to_numpy() - expected["embedding"].to_numpy()).max()
    assert difference <= 1e-6, difference

    shutil.copy2(single.warehouse, sharded.warehouse)  # recall from exactly the single run's inputs
    recall = run_with_celery(celery_env, "recall_candidates", monkeypatch, ALL_ROUTES)
    columns = ("user_id, rank, item_id, route, rank_two_tower, rank_lm_profile, rank_lm_interest, "
               "rank_ease, rank_popularity")
    expected = table(single, f"select {columns}, score from recall.latest order by user_id, rank")
    got = table(sharded, f"select {columns}, score from recall.latest order by user_id, rank")
    assert got["user_id"].n_unique() == SAMPLE_USERS and got.height == expected.height > 0
    assert got.select(pl.col("rank_lm_profile", "rank_lm_interest").is_not_null().any()).row(0) == (True, True)
    assert got.drop("score").equals(expected.drop("score"))
    assert np.allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=0, atol=1e-9)

    steps = {**shard_workers(encoding, "encode_item_shard"), **shard_workers(recall, "recall_shard")}
    assert len(steps) == 2 * SHARDS, steps
    assert len({worker for worker, _ in steps.values()}) == 2, steps  # both workers ran shards
    assert len({pid for _, pid in steps.values()}) == 2, steps
    assert os.getpid() not in {pid for _, pid in steps.values()}
    for asset in ("item_embeddings", "recall_candidates"):  # the merge removed the run's files
        assert not (sharded.shards / asset).exists() or not any((sharded.shards / asset).iterdir())
