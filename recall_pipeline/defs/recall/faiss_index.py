"""``faiss_index``: the item index, exact or approximate by catalogue size."""

import dagster as dg

from recall_pipeline.core.recall.index import IndexSettings, build_and_write
from recall_pipeline.defs.config import config_from
from recall_pipeline.defs.tables import item_vectors
from recall_pipeline.resources import PipelineHome, Warehouse

MANIFEST_CHECK = "index_matches_embeddings"


IndexConfig = config_from(IndexSettings, "IndexConfig",
                          'Exact search up to ``exact_max_items`` items, then ``approximate`` ("hnsw" or "ivf").')


@dg.asset(
    group_name="recall",
    deps=["item_embeddings"],
    kinds={"faiss"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(MANIFEST_CHECK, asset="faiss_index", blocking=True,
                                   description="the stored index loads against the embeddings: same "
                                               "model, count, dims and checksums")],
    description="Inner-product FAISS index of the unit-norm item embeddings: exact (IndexFlatIP) "
                "up to 200,000 items, HNSW above (configurable); FAISS ids are positions in "
                "features.item_index. Written atomically to indexes/items/ with a manifest (model, "
                "type and parameters, count, dims, build time, checksums) that loading checks.",
)
def faiss_index(context: dg.AssetExecutionContext, config: IndexConfig, warehouse: Warehouse,
                home: PipelineHome):
    ids, vectors, model = item_vectors(warehouse)
    folder = home.layout.item_index
    manifest, problem = build_and_write(vectors, ids, model, folder, IndexSettings(**config.model_dump()))
    yield dg.AssetCheckResult(check_name=MANIFEST_CHECK, passed=not problem,
                              metadata={"items": len(ids), "problem": problem or "none"})
    context.log.info(f"{manifest.index_type} index of {manifest.count} items in "
                     f"{manifest.build_seconds:.2f}s at {folder}")
    yield dg.MaterializeResult(metadata={
        "ntotal": manifest.count,
        "dims": manifest.dims,
        "index_type": manifest.index_type,
        "params": dg.MetadataValue.json(manifest.params),
        "model": model,
        "build_seconds": round(manifest.build_seconds, 3),
        "path": dg.MetadataValue.path(str(folder)),
    })
