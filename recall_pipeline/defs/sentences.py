"""The interest sentences kept between runs (``core.features.sentence_vectors``), for the stages
that encode them: an encoder that looks each sentence up first, and the save afterwards."""

import dagster as dg

from recall_pipeline.core.features.sentence_vectors import ReusingEncoder, SentenceStore, model_key
from recall_pipeline.resources import PipelineHome, TextEncoderResource


def reusing_encoder(encoder: TextEncoderResource, home: PipelineHome, stage: str) -> ReusingEncoder:
    """The LM's ``encode`` behind ``stage``'s kept sentences (the LM loads only if one is new)."""
    loaded = encoder.get()
    return ReusingEncoder(loaded.encode, model_key(loaded), SentenceStore(home.layout.sentence_vectors, stage))


def keep_sentences(context: dg.AssetExecutionContext, reusing: ReusingEncoder) -> dict:
    """Save the sentences the stage used as its file; log it (and any file a killed save left,
    removed); the metadata entry for the stage's result."""
    removed = reusing.store.save(reusing.table)
    if removed:
        context.log.info(f"removed {', '.join(removed)}: kept sentences a killed run had half written")
    context.log.info(reusing.summary())
    return {"interest_sentences": reusing.summary()}
