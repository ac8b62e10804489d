"""Serving: FAISS indexes, top-K ranking, recall routes, fusion and re-ranking, the recall tables."""
