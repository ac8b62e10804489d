"""``item_embeddings``: the pretrained LM's vector of every item's cleaned text, encoded in shards.

Three steps: ``plan`` (reads the warehouse: which texts are new or changed, written per shard to
the shard location), ``encode`` (one per shard, on any worker: no warehouse), ``merge`` (the
single writer: encoded and reused rows into DuckDB, then the check).
"""

import dagster as dg
import numpy as np

from recall_pipeline.core.features import item_embeddings as embeddings
from recall_pipeline.core.shards import ShardStore, ShardTask, split_by_shard
from recall_pipeline.defs.sharding import open_store, shard_count, shard_tasks
from recall_pipeline.resources import PipelineHome, TextEncoderResource, Warehouse

ASSET = "item_embeddings"
UNIT_NORM_CHECK = "embeddings_finite_unit_norm_one_per_item"


class ShardConfig(dg.Config):
    """``shards``: how many shards encode the texts (0: ``$RECALL_PIPELINE_SHARDS``, default 1)."""

    shards: int = 0


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.DynamicOut(ShardTask), pool="warehouse")
def plan_item_embeddings(context: dg.OpExecutionContext, config: ShardConfig, encoder: TextEncoderResource,
                         warehouse: Warehouse, home: PipelineHome):
    """The texts to encode (new or changed), split by a hash of the item id, and the wanted keys."""
    items = warehouse.query("select item_id, item_text from clean.items")
    previous = (warehouse.query("select * from features.item_embeddings")
                if warehouse.has_table("features.item_embeddings") else None)
    plan = embeddings.plan_refresh(items, encoder.get().identity.key(), previous)
    store, n_shards, run_id = open_store(context, home, ASSET), shard_count(config.shards), context.run.run_id
    store.write(run_id, "wanted", plan.wanted)
    for shard, todo in enumerate(split_by_shard(plan.todo, "item_id", n_shards)):
        store.write(run_id, f"todo-{shard}", todo)
    context.log.info(f"{plan.todo.height} item texts to encode in {n_shards} shard(s), {plan.reused.height} reused")
    yield from shard_tasks(store, run_id, n_shards)


@dg.op
def encode_item_shard(context: dg.OpExecutionContext, task: ShardTask, encoder: TextEncoderResource) -> dict:
    """Encode one shard's texts into ``encoded-<shard>``."""
    todo = task.store.read(task.run_id, f"todo-{task.shard}")
    encoded, seconds = embeddings.encode_texts(todo, encoder.get(), progress=True)
    task.store.write(task.run_id, f"encoded-{task.shard}", encoded)
    context.log.info(f"shard {task.shard}: encoded {todo.height} item texts in {seconds:.1f} s")
    return {"shard": task.shard, "url": task.url, "encoded": todo.height, "seconds": seconds}


@dg.op(out={"result": dg.Out(), "check": dg.Out()}, pool="warehouse")
def merge_item_embeddings(context: dg.OpExecutionContext, shards: list[dict], encoder: TextEncoderResource,
                          warehouse: Warehouse):
    """Encoded and reused rows into ``features.item_embeddings`` (the one writer), then the check;
    the run's shard files are removed once the table is written."""
    store, run_id = ShardStore(shards[0]["url"], ASSET), context.run.run_id
    wanted = store.read(run_id, "wanted")
    previous = (warehouse.query("select * from features.item_embeddings")
                if warehouse.has_table("features.item_embeddings") else None)
    reused = embeddings.reused_rows(wanted, previous)
    table = embeddings.assemble([store.read(run_id, f"encoded-{s['shard']}") for s in shards], reused)
    warehouse.replace_table("features.item_embeddings", table)
    store.remove(run_id)
    ids, vectors = embeddings.as_matrix(table)
    norms = np.linalg.norm(vectors, axis=1)
    encoded, seconds = sum(s["encoded"] for s in shards), sum(s["seconds"] for s in shards)
    per_second = encoded / seconds if encoded else 0.0
    context.log.info(f"encoded {encoded} item texts ({per_second:.0f}/s) in {len(shards)} shard(s), "
                     f"reused {reused.height}")
    yield dg.AssetCheckResult(
        check_name=UNIT_NORM_CHECK,
        passed=bool(np.isfinite(vectors).all() and np.allclose(norms, 1.0, atol=1e-3)
                    and len(np.unique(ids)) == len(ids) == wanted.height),
        metadata={"vectors": len(ids), "items": wanted.height,
                  "max_norm_error": float(np.abs(norms - 1.0).max(initial=0.0))},
    )
    yield dg.Output(None, "result", metadata={
        "dagster/row_count": table.height, "model": wanted["model"][0] if wanted.height else "",
        "device": encoder.get().device, "dims": int(vectors.shape[1]), "encoded": encoded,
        "reused": reused.height, "shards": len(shards), "encode_seconds": round(seconds, 2),
        "items_per_second": round(per_second, 1)})


@dg.graph_asset(
    ins={"cleaned_item_text": dg.AssetIn(dagster_type=dg.Nothing)},
    group_name="features",
    kinds={"duckdb", "pytorch"},
    config=dg.ConfigMapping(config_fn=lambda c: {"plan_item_embeddings": {"config": c}},
                            config_schema=ShardConfig.to_config_schema()),
    check_specs=[dg.AssetCheckSpec(UNIT_NORM_CHECK, asset=ASSET, blocking=True,
                                   description="one finite, unit-norm vector per catalogue item")],
    description="L2-normalised sentence embeddings of each item's text from the pretrained LM "
                "(all-MiniLM-L6-v2 by default), keyed by (item id, text hash, model): a refresh "
                "encodes only new or changed texts, in shards by a hash of the item id (config "
                "shards; each shard a step any executor can run elsewhere), merged by one writer. "
                "DuckDB table features.item_embeddings.",
)
def item_embeddings(cleaned_item_text):
    return merge_item_embeddings(plan_item_embeddings(cleaned_item_text).map(encode_item_shard).collect())
