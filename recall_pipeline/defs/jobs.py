"""Jobs: the full refresh that materializes every asset (``make run``)."""

import dagster as dg

recall_job = dg.define_asset_job(
    "recall_job",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole graph: ingest, clean, split, encode, index, recall, evaluate.",
)
