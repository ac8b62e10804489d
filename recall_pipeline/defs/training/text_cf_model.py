"""``text_cf_model``: what ranks the cold items: the closed-form text -> interaction model TextCF,
or the LM view of the user that ranks them better on pseudo-cold validation."""

import dagster as dg
import polars as pl

from recall_pipeline.core.features.user_profiles import ProfileSettings
from recall_pipeline.core.training import text_cf
from recall_pipeline.defs import tables
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.defs.sentences import keep_sentences, reusing_encoder
from recall_pipeline.resources import DataSource, PipelineHome, TextEncoderResource, Warehouse


@dg.asset(
    group_name="training",
    deps=["rating_matrix", "item_embeddings", "cleaned_item_text"],
    kinds={"numpy"},
    pool="warehouse",
    description="TextCF (core/training/text_cf.py): a d x d map, fitted in closed form on the "
                "training interactions, under which a user's history in LM text space predicts "
                "which items they interact with; it ranks items nobody has interacted with yet "
                "(route text_cf; the cold slice of evaluation_report). Its regularisation and "
                "user weighting, then its blend with the LM's own view (raw text similarity of the "
                "history: 0 TextCF alone, 1 the LM alone), then the cold scorer itself (TextCF so "
                "blended, or the LM history profile or interest vectors as the recall routes build "
                "them) are chosen on pseudo-cold validation items held out of training (the "
                "protocol's rule 4; the test split is never read), then it is refit on all of "
                "training. Stored atomically at models/text_cf/text_cf.npz.",
)
def text_cf_model(context: dg.AssetExecutionContext, warehouse: Warehouse, home: PipelineHome,
                  encoder: TextEncoderResource, data_source: DataSource) -> dg.MaterializeResult:
    ids, vectors, encoder_key = tables.item_vectors(warehouse)
    encode = reusing_encoder(encoder, home, "text_cf_model")
    tuned, split = text_cf.choose(tables.training_rows(warehouse), tables.item_texts(warehouse), ids, vectors,
                                  encoder_key, encode, ProfileSettings(rating_max=data_source.rating_max))
    sentences = keep_sentences(context, encode)
    rm = tables.rating_matrix(warehouse)
    model = text_cf.fit_for_serving(rm.matrix, rm.item_ids, text_cf.item_features(vectors), tuned.lam, tuned.alpha,
                                    context.run.run_id, tuned.blend, tuned.cold_scorer)
    text_cf.save(model, home.layout.text_cf_model, encoder_key, tuned)
    margin = tuned.margin.describe() if tuned.margin else "no other scorer judged"
    context.log.info(f"cold scorer {tuned.cold_scorer}, pseudo-cold Recall@20 {tuned.recall:.4f}, {margin}; TextCF: lambda "
                     f"{tuned.lam}, alpha {tuned.alpha}, blend with the LM's view {tuned.blend} (by blend: "
                     f"{tuned.blends}); the cold scorers: {tuned.scorers}")
    grid = pl.DataFrame([{"lambda": lam, "alpha": alpha, "pseudo_cold_recall@20": round(value, 4)}
                         for (lam, alpha), value in tuned.grid.items()])
    scorers = [{"cold_scorer": name, "pseudo_cold_recall@20": round(v, 4)} for name, v in tuned.scorers.items()]
    return dg.MaterializeResult(metadata={
        "cold_scorer": tuned.cold_scorer, "lambda": tuned.lam, "alpha": tuned.alpha, "blend": tuned.blend,
        "encoder": encoder_key,
        "blends": markdown_table(pl.DataFrame([{"blend": b, "pseudo_cold_recall@20": round(v, 4)}
                                               for b, v in tuned.blends.items()])),
        "cold_scorers": markdown_table(pl.DataFrame(scorers)),
        "pseudo_cold_users": len(split.rows), **sentences,
        "untrained_items": len(model.untrained_ids),
        "pseudo_cold_recall@20": dg.MetadataValue.float(round(tuned.recall, 4)),
        "lead_over_next_scorer": margin,
        "grid": markdown_table(grid, rows=len(tuned.grid)),
        "path": dg.MetadataValue.path(str(home.layout.text_cf_model)),
    })
