"""Jobs: the full refresh (every asset) and the feedback refresh (what new feedback changes)."""

import os

import dagster as dg

# A feedback refresh retrains the recall model only when training has grown by this many
# interactions since the champion was trained; the nightly full refresh always retrains.
RETRAIN_ENV = "RECALL_PIPELINE_RETRAIN_MIN_NEW_INTERACTIONS"
DEFAULT_RETRAIN_MIN_NEW_INTERACTIONS = 1000

recall_job = dg.define_asset_job(
    "recall_job",
    selection=dg.AssetSelection.all(),
    description="Full refresh: ingest (and any waiting feedback), clean, split, encode, profile, "
                "index, recall, evaluate, publish.",
)

feedback_refresh_job = dg.define_asset_job(
    "feedback_refresh_job",
    selection=dg.AssetSelection.assets("feedback_events").downstream(),
    description="Append new feedback and refresh only what depends on it: cleaning, split, "
                "profiles, recall lists, evaluation and the published copy (item embeddings and "
                "the LM index are reused; the recall model is retrained only past the configured "
                "threshold of new training interactions).",
)


def feedback_run_config(files: list[str]) -> dict:
    """Run config of a feedback refresh for the given inbox files."""
    threshold = int(os.environ.get(RETRAIN_ENV, DEFAULT_RETRAIN_MIN_NEW_INTERACTIONS))
    return {"ops": {"feedback_events": {"config": {"files": files}},
                    "recall_model": {"config": {"retrain_min_new_interactions": threshold}}}}
