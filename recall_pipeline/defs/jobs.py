"""Jobs: the full refresh (every asset) and the feedback refresh (what new feedback changes)."""

import dagster as dg

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
                "the index are reused).",
)
