"""Ingestion: loading sources, cleaning item text and interactions, the feedback inbox."""
