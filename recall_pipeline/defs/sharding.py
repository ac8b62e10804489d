"""What the sharded assets share: their shard store, its clean-up, and the shard tasks."""

from __future__ import annotations

import dagster as dg

from recall_pipeline.core.shards import ShardStore, ShardTask
from recall_pipeline.resources import PipelineHome
from recall_pipeline.settings import default_shards


def shard_count(configured: int) -> int:
    """The config's shard count, or ``$RECALL_PIPELINE_SHARDS`` (default 1) when it is 0."""
    return configured if configured > 0 else default_shards()


def open_store(context: dg.OpExecutionContext, home: PipelineHome, asset: str) -> ShardStore:
    """The asset's shard store; first removes what runs that are no longer running left behind
    (a killed run cannot clean up after itself), and says so in the log."""
    store = ShardStore(home.layout.shards_url(), asset)

    def still_running(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    stale = store.remove_stale(context.run.run_id, still_running)
    if stale:
        context.log.info(f"removed the shard files of earlier runs that did not finish: {stale}")
    return store


def shard_tasks(store: ShardStore, run_id: str, n_shards: int, **params):
    """One dynamic output per shard (all of them, even empty ones, so the merge always runs)."""
    for shard in range(n_shards):
        yield dg.DynamicOutput(ShardTask(store.url, store.asset, run_id, shard, params),
                               mapping_key=f"shard_{shard}")
