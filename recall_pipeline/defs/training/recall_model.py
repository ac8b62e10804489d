"""``recall_model``: train the two-tower model, track it in MLflow, register it, apply the
champion rule."""

import dagster as dg
import polars as pl

from recall_pipeline.core.training import model_registry
from recall_pipeline.core.ids import require_same_ids
from recall_pipeline.core.training.two_tower.settings import Architecture, TrainingSettings
from recall_pipeline.defs import tables
from recall_pipeline.defs.config import config_from
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import MlflowTracking, PipelineHome, TextEncoderResource, Warehouse
RecallModelConfig = config_from(
    (Architecture, TrainingSettings), "RecallModelConfig",
    """Model size and training (defaults checked on the validation cut), and when to retrain.

    ``lm_finetune_layers``: also fine-tune this many of the LM's top layers end to end (0: the
    LM stays frozen; slower, see bench/experiments/lm_finetune.py). ``max_train_seconds``: a time budget for
    the whole training (0: none). ``retrain_min_new_interactions``: retrain only when training
    has grown by at least this many interactions since the champion was trained (0: always
    retrain); otherwise the champion stays and this materialization records that nothing was
    retrained.""",
    retrain_min_new_interactions=(int, 0))


@dg.asset(
    group_name="training",
    deps=["rating_matrix", "item_embeddings"],
    kinds={"pytorch", "mlflow"},
    pool="warehouse",
    description="Two-tower recall model on the frozen LM item embeddings (item tower: residual MLP "
                "over the LM embedding + item-id embedding with dropout; user tower: attention over "
                "the recent history + LM interest profile; in-batch softmax with logQ correction), "
                "early-stopped on the validation cut's Recall@50, then shown all of training: one more "
                "pass, or a new model trained on all of it for the best number of epochs where one "
                "epoch past the best lost validation recall beyond the noise (config refit: auto; "
                "continue, full or none pin it; metadata refit says which ran and why). Each "
                "training is an MLflow run (params, per-epoch metrics, data snapshot, safetensors "
                "weights) registered as a version of 'recall_two_tower'; the alias 'champion' moves "
                "to it only if its validation Recall@50 is at least the champion's, judged on training "
                "data alone (the same validation cut, or, when new data moved the cut, the current "
                "holdout less every pair the champion trained on); never on the test split. "
                "Each version also gets a trust factor (0 to 1) on the two-tower route's fusion weight, "
                "the largest whose fused lists keep the best validation Recall@50 (metadata "
                "two_tower_trust, trust_grid): recall_candidates applies the serving version's. "
                "Versions, what judged them and the decisions in DuckDB models.versions.",
)
def recall_model(context: dg.AssetExecutionContext, config: RecallModelConfig, warehouse: Warehouse,
                 home: PipelineHome, mlflow: MlflowTracking, encoder: TextEncoderResource) -> dg.MaterializeResult:
    from recall_pipeline.core.training import recall_model as training

    run_id, inputs = context.run.run_id, tables.training_inputs(warehouse, home)
    champion = model_registry.champion_version(mlflow.tracking_uri)
    skip = training.retrain_not_needed(mlflow.tracking_uri, champion, inputs.train_rows, inputs.encoder,
                                       config.retrain_min_new_interactions)
    if skip:
        context.log.info(skip)
        return dg.MaterializeResult(metadata={"retrained": False, "reason": skip, "champion": champion or ""})
    settings = training.settings_from(config.model_dump(exclude={"retrain_min_new_interactions"}))
    lm_top = _lm_top_layers(warehouse, encoder, inputs.item_ids, inputs.encoder, config.lm_finetune_layers)
    folder = home.layout.trained_model(run_id)
    with mlflow.start_run("recall_model", {"dagster_run_id": run_id, "encoder": inputs.encoder}) as (tracker, run):
        result, outcome, trust = training.train_and_register(inputs, settings, folder, mlflow.tracking_uri, tracker,
                                                      run.info.run_id, run_id, context.log.info, lm_top)
    warehouse.append_table("models.versions", outcome.row(run_id, run.info.run_id))
    context.log.info(outcome.promotion.reason)
    return dg.MaterializeResult(metadata={
        "retrained": True, "version": outcome.promotion.version, "champion": outcome.champion,
        "promoted": outcome.promotion.promoted, "decision": outcome.promotion.reason,
        "best_epoch": result.best_epoch, "served": result.served, "refit": result.refit,
        "two_tower_trust": trust.factor, "trust_grid": dg.MetadataValue.json(trust.as_metadata()),
        "validation_recall@50": dg.MetadataValue.float(round(result.best_validation_recall, 4)),
        "judged_on": outcome.promotion.judgement.judged_on,
        **{name: dg.MetadataValue.float(round(value, 4)) for name, value in (
            ("judged_recall@50", outcome.promotion.candidate_value),
            ("champion_judged_recall@50", outcome.promotion.champion_value)) if value is not None},
        "train_seconds": round(result.seconds, 1), "mlflow_run_id": run.info.run_id,
        "epochs": markdown_table(pl.DataFrame(result.history).with_columns(pl.selectors.float().round(4)), rows=60),
        "path": dg.MetadataValue.path(str(folder)),
    })


def _lm_top_layers(warehouse: Warehouse, encoder: TextEncoderResource, ids, embedded_with: str, n_layers: int):
    """The LM's top layers over the catalogue's item texts, when fine-tuning is on."""
    if not n_layers:
        return None
    from recall_pipeline.core.training.lm_finetune import TopLayers

    loaded = encoder.get()
    if loaded.identity.key() != embedded_with:
        raise RuntimeError(f"the encoder resource is {loaded.identity.key()} but the item embeddings were made "
                           f"with {embedded_with}: re-materialize item_embeddings first")
    texts = warehouse.query("select item_id, item_text from clean.items order by item_id")
    require_same_ids(ids, texts["item_id"].to_numpy(), "clean.items against the embeddings")
    return TopLayers.from_encoder(loaded, texts["item_text"].to_list(), n_layers)
