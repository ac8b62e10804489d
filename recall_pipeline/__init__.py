"""recall_pipeline: a Dagster pipeline that uses a pretrained language model for recommender recall.

The recommender logic lives in :mod:`recall_pipeline.core` (no Dagster imports, unit-tested
directly); :mod:`recall_pipeline.defs` is the thin Dagster wiring; :mod:`recall_pipeline.definitions`
builds the one ``Definitions`` object.
"""
