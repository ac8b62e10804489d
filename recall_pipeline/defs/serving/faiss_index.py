"""``faiss_index``: an exact inner-product FAISS index over the item embeddings."""

import time

import dagster as dg

from recall_pipeline.core.index import build_exact_index, new_manifest, write_index
from recall_pipeline.defs.tables import item_vectors
from recall_pipeline.resources import PipelineHome, Warehouse


@dg.asset(
    group_name="serving",
    deps=["item_embeddings"],
    kinds={"faiss"},
    pool="warehouse",
    description="Exact inner-product FAISS index (IndexFlatIP) of the unit-norm item embeddings; "
                "FAISS ids are positions in features.item_index. Written atomically to "
                "indexes/items/ with a manifest (model, dims, count, checksums).",
)
def faiss_index(context: dg.AssetExecutionContext, warehouse: Warehouse,
                home: PipelineHome) -> dg.MaterializeResult:
    ids, vectors, model = item_vectors(warehouse)
    start = time.perf_counter()
    index = build_exact_index(vectors)
    seconds = time.perf_counter() - start
    folder = home.layout.indexes / "items"
    manifest = write_index(index, new_manifest(model, "IndexFlatIP", ids, vectors, seconds), folder)
    context.log.info(f"indexed {index.ntotal} items in {seconds:.2f}s at {folder}")
    return dg.MaterializeResult(metadata={
        "ntotal": int(index.ntotal),
        "dims": manifest.dims,
        "index_type": manifest.index_type,
        "model": model,
        "build_seconds": round(seconds, 3),
        "path": dg.MetadataValue.path(str(folder)),
    })
