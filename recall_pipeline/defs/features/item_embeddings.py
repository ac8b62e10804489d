"""``item_embeddings``: the pretrained LM's vector of every item's cleaned text."""

import dagster as dg
import numpy as np

from recall_pipeline.core.features.item_embeddings import as_matrix, refresh_item_embeddings
from recall_pipeline.resources import TextEncoderResource, Warehouse

UNIT_NORM_CHECK = "embeddings_finite_unit_norm_one_per_item"


@dg.asset(
    group_name="features",
    deps=["cleaned_item_text"],
    kinds={"duckdb", "pytorch"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(UNIT_NORM_CHECK, asset="item_embeddings", blocking=True,
                                   description="one finite, unit-norm vector per catalogue item")],
    description="L2-normalised sentence embeddings of each item's text from the pretrained LM "
                "(all-MiniLM-L6-v2 by default), keyed by (item id, text hash, model): a refresh "
                "encodes only new or changed texts. DuckDB table features.item_embeddings.",
)
def item_embeddings(context: dg.AssetExecutionContext, encoder: TextEncoderResource,
                    warehouse: Warehouse):
    items = warehouse.query("select item_id, item_text from clean.items")
    previous = (warehouse.query("select * from features.item_embeddings")
                if warehouse.has_table("features.item_embeddings") else None)
    text_encoder = encoder.get()
    refresh = refresh_item_embeddings(items, text_encoder, previous, progress=True)
    warehouse.replace_table("features.item_embeddings", refresh.table)
    ids, vectors = as_matrix(warehouse.query("select item_id, embedding from features.item_embeddings"))
    norms = np.linalg.norm(vectors, axis=1)
    per_second = refresh.encoded / refresh.encode_seconds if refresh.encoded else 0.0
    context.log.info(f"encoded {refresh.encoded} item texts ({per_second:.0f}/s), reused {refresh.reused}")
    yield dg.AssetCheckResult(
        check_name=UNIT_NORM_CHECK,
        passed=bool(np.isfinite(vectors).all() and np.allclose(norms, 1.0, atol=1e-3)
                    and len(np.unique(ids)) == len(ids) == items.height),
        metadata={"vectors": len(ids), "items": items.height,
                  "max_norm_error": float(np.abs(norms - 1.0).max(initial=0.0))},
    )
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": refresh.table.height,
        "model": text_encoder.identity.key(),
        "device": text_encoder.device,
        "dims": int(vectors.shape[1]),
        "encoded": refresh.encoded,
        "reused": refresh.reused,
        "encode_seconds": round(refresh.encode_seconds, 2),
        "items_per_second": round(per_second, 1),
    })
