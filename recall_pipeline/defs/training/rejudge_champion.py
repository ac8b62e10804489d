"""``rejudge_champion_job``: judge the champion again on today's training data.

A version is judged once, when it is registered, on the data of that day. This job scores the
champion and the newest other versions again on the current validation cut
(``core.training.recall_model.rejudge``) and moves the alias when another version is now
strictly better; the next ``two_tower_index`` materialization (the nightly refresh) serves it.
"""

import dagster as dg

from recall_pipeline.core.training import model_registry
from recall_pipeline.defs import tables
from recall_pipeline.resources import MlflowTracking, PipelineHome, Warehouse

REJUDGE_JOB = "rejudge_champion_job"


class RejudgeConfig(dg.Config):
    """How many of the newest versions besides the champion are judged with it."""

    candidates: int = 3


@dg.op(pool="warehouse")
def rejudge_champion(context: dg.OpExecutionContext, config: RejudgeConfig, warehouse: Warehouse,
                     home: PipelineHome, mlflow: MlflowTracking) -> dg.Output:
    from recall_pipeline.core.training import recall_model

    inputs = tables.training_inputs(warehouse, home)
    rejudged = recall_model.rejudge(inputs.split, inputs.rm, inputs.item_ids, inputs.lm_vectors, inputs.encoder,
                                    mlflow.tracking_uri, config.candidates)
    model_registry.apply_rejudgement(mlflow.tracking_uri, rejudged)
    context.log.info(rejudged.reason)
    return dg.Output(None, metadata={
        "decision": rejudged.reason, "champion_before": rejudged.champion_before or "none",
        "champion_after": rejudged.champion_after or "none", "users": rejudged.users,
        "interactions": rejudged.interactions, "skipped": dg.MetadataValue.json(rejudged.skipped),
        **{f"v{version}_recall@50": dg.MetadataValue.float(round(value, 5)) for version, value in rejudged.values.items()},
    })


@dg.job(name=REJUDGE_JOB, description="Judge the champion again on today's training data (never the test split): "
                                     "the champion and the newest other versions on the current validation "
                                     "holdout less every pair any of them trained on; the alias moves to a "
                                     "version that is now strictly better.")
def rejudge_champion_job():
    rejudge_champion()
