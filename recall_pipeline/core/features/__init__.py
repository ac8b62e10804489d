"""Features: the protocol's split, the rating matrix, LM encoding, item embeddings, user profiles."""
