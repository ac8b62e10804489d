"""``two_tower_index``: the FAISS index of the serving model version's item-tower outputs."""

import shutil
from pathlib import Path

import dagster as dg

from recall_pipeline.core.recall.index import IndexMismatchError, IndexSettings, build_and_write
from recall_pipeline.defs import tables
from recall_pipeline.resources import MlflowTracking, PipelineHome, Warehouse

MANIFEST_CHECK = "two_tower_index_matches_model"


class TwoTowerIndexConfig(dg.Config):
    """Which registered version serves: a version number, an alias (``champion``) or ``latest``."""

    model_version: str = "champion"


@dg.asset(
    group_name="recall",
    deps=["recall_model", "item_embeddings"],
    kinds={"faiss", "pytorch"},
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(MANIFEST_CHECK, asset="two_tower_index", blocking=True,
                                   description="the index loads against the model's item vectors: "
                                               "same version, count, dims and checksums")],
    description="Inner-product FAISS index of the item-tower outputs of the serving version of "
                "recall_two_tower (default: the MLflow alias 'champion'; any version by config), "
                "over the whole catalogue (items nobody has rated are placed by their text). Each "
                "materialization publishes one folder, indexes/two_tower/versions/<version>-<run>/, "
                "holding the model, the index and its manifest, and then switches the pointer file "
                "indexes/two_tower/CURRENT to it in one rename, so recall always reads a model with "
                "its own index. The previous version is kept; older ones, half-built folders of "
                "killed runs and an earlier flat layout are removed.",
)
def two_tower_index(context: dg.AssetExecutionContext, config: TwoTowerIndexConfig,
                    warehouse: Warehouse, home: PipelineHome, mlflow: MlflowTracking):
    from recall_pipeline.core.training import model_registry

    version = model_registry.resolve(mlflow.tracking_uri, config.model_version)
    ids, lm_vectors, encoder = tables.item_vectors(warehouse)
    key = f"{model_registry.MODEL_NAME}/v{version}"

    def build(folder: Path):
        _download_model(folder / tables.MODEL_FOLDER, mlflow.tracking_uri, version)
        _, vectors = tables.two_tower_model(folder, ids, lm_vectors, encoder)
        manifest, problem = build_and_write(vectors, ids, key, folder, IndexSettings(), "two_tower_index")
        if problem:  # never pointed at: the version serving now stays
            raise IndexMismatchError(problem)
        return manifest

    try:
        published = home.layout.two_tower_serving.publish(f"v{version}-{context.run_id[:8]}", build)
    except IndexMismatchError as exc:
        yield dg.AssetCheckResult(check_name=MANIFEST_CHECK, passed=False,
                                  metadata={"items": len(ids), "problem": str(exc)})
        raise
    manifest = published.built
    yield dg.AssetCheckResult(check_name=MANIFEST_CHECK, passed=True,
                              metadata={"items": len(ids), "problem": "none"})
    context.log.info(f"{manifest.index_type} index of {manifest.count} item-tower vectors of {key} "
                     f"in {manifest.build_seconds:.2f}s, published as {published.folder}")
    yield dg.MaterializeResult(metadata={
        "model_version": key, "ntotal": manifest.count, "dims": manifest.dims,
        "index_type": manifest.index_type, "build_seconds": round(manifest.build_seconds, 3),
        **_publication(published)})


def _publication(published) -> dict:
    """Where the version was published, what it replaced and what was cleaned up."""
    cleanup = published.cleanup
    return {
        "path": dg.MetadataValue.path(str(published.folder)),
        "previous": dg.MetadataValue.path(str(published.previous)) if published.previous else "none",
        "removed_half_built": _listed(cleanup.half_built, "none (no killed publish left anything)"),
        "removed_superseded": _listed(cleanup.superseded, "none"),
        "removed_flat_layout": _listed(cleanup.flat_layout, "none (already in the versioned layout)"),
        "kept_for_readers": _listed(cleanup.held, "none"),
    }


def _listed(paths: tuple[str, ...], empty: str) -> str:
    return ", ".join(paths) if paths else empty


def _download_model(target: Path, tracking_uri: str, version: str) -> None:
    """Download the registered version's model folder to ``target`` (inside the staging folder)."""
    from recall_pipeline.core.training import model_registry

    download = target.with_name(".download")
    model_registry.download(tracking_uri, version, download).rename(target)
    shutil.rmtree(download, ignore_errors=True)  # gone already when MLflow downloaded into it directly
