"""The one place that builds the Dagster ``Definitions``: assets, checks, jobs and resources.

``dagster dev -w workspace.yaml`` loads :func:`defs`; the CLI and the tests call
:func:`build_definitions` with their own home folder or data source.
"""

from __future__ import annotations

import dagster as dg

from recall_pipeline.defs.evaluation.evaluation_report import evaluation_report
from recall_pipeline.defs.executors import executor_from_env
from recall_pipeline.defs.features.item_embeddings import item_embeddings
from recall_pipeline.defs.features.rating_matrix import rating_matrix
from recall_pipeline.defs.features.user_profiles import user_profiles
from recall_pipeline.defs.freshness import freshness_sensor, published_freshness_checks
from recall_pipeline.defs.ingest.cleaned_interactions import cleaned_interactions
from recall_pipeline.defs.ingest.cleaned_item_text import cleaned_item_text
from recall_pipeline.defs.ingest.feedback_events import feedback_events
from recall_pipeline.defs.ingest.raw_interactions_and_items import raw_interactions_and_items
from recall_pipeline.defs.jobs import feedback_refresh_job, recall_job
from recall_pipeline.defs.recall.faiss_index import faiss_index
from recall_pipeline.defs.recall.published_warehouse import published_warehouse
from recall_pipeline.defs.recall.recall_candidates import recall_candidates
from recall_pipeline.defs.recall.route_settings import route_settings
from recall_pipeline.defs.recall.two_tower_index import two_tower_index
from recall_pipeline.defs.operations.run_failures import run_failure_recorder, run_failures_table
from recall_pipeline.defs.schedules import nightly_refresh
from recall_pipeline.defs.sensors import feedback_inbox_sensor
from recall_pipeline.defs.training.ease_model import ease_model
from recall_pipeline.defs.training.recall_model import recall_model
from recall_pipeline.defs.training.rejudge_champion import rejudge_champion_job
from recall_pipeline.defs.training.text_cf_model import text_cf_model
from recall_pipeline.resources import (
    DataSource, MlflowTracking, PipelineHome, TextEncoderResource, Warehouse, data_source_from_env,
)
from recall_pipeline.settings import HomeLayout, env, home_layout

# Who to ask about an asset, shown in the UI: one policy for the whole graph.
OWNER = env("RECALL_PIPELINE_OWNER")

ASSETS = dg.map_asset_specs(
    lambda spec: spec.replace_attributes(owners=[OWNER]),
    [raw_interactions_and_items, feedback_events, cleaned_item_text, cleaned_interactions,
     rating_matrix, item_embeddings, user_profiles, recall_model, text_cf_model, ease_model, faiss_index,
     two_tower_index, route_settings, recall_candidates,
     evaluation_report, published_warehouse, run_failures_table],
)


def build_resources(home: HomeLayout, data_source: DataSource | None = None) -> dict:
    return {
        "warehouse": Warehouse(path=str(home.warehouse)),
        "home": PipelineHome(root=str(home.root)),
        "data_source": data_source or data_source_from_env(),
        "encoder": TextEncoderResource(model=env("RECALL_PIPELINE_ENCODER_MODEL"),
                                       precision=env("RECALL_PIPELINE_ENCODER_PRECISION")),
        "mlflow": MlflowTracking(
            # not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri writes that variable itself
            tracking_uri=env("RECALL_PIPELINE_MLFLOW_URI") or f"sqlite:///{home.mlflow_db}",
            artifact_root=str(home.mlflow_artifacts),
        ),
    }


def build_definitions(home: HomeLayout | None = None, data_source: DataSource | None = None,
                      feedback_evaluation: str | None = None) -> dg.Definitions:
    """``feedback_evaluation``: ``defer`` or ``run`` (default ``$RECALL_PIPELINE_FEEDBACK_EVALUATION``,
    else ``defer``): whether the feedback refresh evaluates before publishing."""
    freshness = published_freshness_checks()
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=freshness,
        jobs=[recall_job, feedback_refresh_job(feedback_evaluation), rejudge_champion_job],
        schedules=[nightly_refresh],
        sensors=[feedback_inbox_sensor, freshness_sensor(freshness), run_failure_recorder],
        resources=build_resources(home or home_layout(), data_source),
        # $RECALL_PIPELINE_EXECUTOR, default in_process: on 2 cores a subprocess per step costs
        # more than the parallelism gains (defs/executors.py)
        executor=executor_from_env(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()


def recall_job_definition() -> dg.JobDefinition:
    """``recall_job`` of the environment's definitions, for ``dg.reconstructable``: executors
    that run steps in other processes (multiprocess, celery) rebuild the job from this function."""
    return build_definitions().resolve_job_def("recall_job")
