"""Thin Dagster wiring: one module per asset (or tightly coupled pair), named after it.

Groups are pipeline stages: ``ingest`` (raw and cleaned data), ``features`` (split, matrix,
embeddings, profiles), ``training`` (the models), ``recall`` (indexes and recall lists) and ``evaluation``.
"""
