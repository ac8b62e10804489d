"""``two_tower_index``: the FAISS index of the serving model version's item-tower outputs."""

import shutil
import tempfile
from pathlib import Path

import dagster as dg

from recall_pipeline.core.serving.index import IndexSettings, build_and_write
from recall_pipeline.defs import tables
from recall_pipeline.resources import MlflowTracking, PipelineHome, Warehouse

MANIFEST_CHECK = "two_tower_index_matches_model"


class TwoTowerIndexConfig(dg.Config):
    """Which registered version serves: a version number, an alias (``champion``) or ``latest``."""

    model_version: str = "champion"


@dg.asset(
    group_name="serving",
    deps=["recall_model", "item_embeddings"],
    kinds={"faiss", "pytorch"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(MANIFEST_CHECK, asset="two_tower_index", blocking=True,
                                   description="the index loads against the model's item vectors: "
                                               "same version, count, dims and checksums")],
    description="Inner-product FAISS index of the item-tower outputs of the serving version of "
                "recall_two_tower (default: the MLflow alias 'champion'; any version by config), "
                "over the whole catalogue (items nobody has rated are placed by their text). The "
                "model folder is copied beside the index (indexes/two_tower/), so recall serves "
                "exactly the version the manifest names.",
)
def two_tower_index(context: dg.AssetExecutionContext, config: TwoTowerIndexConfig,
                    warehouse: Warehouse, home: PipelineHome, mlflow: MlflowTracking):
    from recall_pipeline.core.training import model_registry

    version = model_registry.resolve(mlflow.tracking_uri, config.model_version)
    folder = home.layout.two_tower_index
    _replace_model(folder / "model", mlflow.tracking_uri, version)
    ids, lm_vectors, encoder = tables.item_vectors(warehouse)
    key = f"{model_registry.MODEL_NAME}/v{version}"
    _, vectors = tables.two_tower_model(folder, ids, lm_vectors, encoder)
    manifest, problem = build_and_write(vectors, ids, key, folder, IndexSettings(), "two_tower_index")
    yield dg.AssetCheckResult(check_name=MANIFEST_CHECK, passed=not problem,
                              metadata={"items": len(ids), "problem": problem or "none"})
    context.log.info(f"{manifest.index_type} index of {manifest.count} item-tower vectors of {key} "
                     f"in {manifest.build_seconds:.2f}s")
    yield dg.MaterializeResult(metadata={"model_version": key, "ntotal": manifest.count,
                                         "dims": manifest.dims, "index_type": manifest.index_type,
                                         "build_seconds": round(manifest.build_seconds, 3),
                                         "path": dg.MetadataValue.path(str(folder))})


def _replace_model(target: Path, tracking_uri: str, version: str) -> None:
    """Download the version beside the index, replacing the previous one in one rename."""
    from recall_pipeline.core.training import model_registry

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=target.parent))
    downloaded = model_registry.download(tracking_uri, version, staging)
    old = target.with_name(".model-old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    downloaded.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
