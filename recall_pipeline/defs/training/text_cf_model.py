"""``text_cf_model``: the closed-form text -> interaction model that ranks cold items."""

import dagster as dg
import polars as pl

from recall_pipeline.core.training import text_cf
from recall_pipeline.defs import tables
from recall_pipeline.defs.metadata import markdown_table
from recall_pipeline.resources import PipelineHome, Warehouse


@dg.asset(
    group_name="training",
    deps=["rating_matrix", "item_embeddings"],
    kinds={"numpy"},
    pool="warehouse",
    description="TextCF (core/training/text_cf.py): a d x d map, fitted in closed form on the "
                "training interactions, under which a user's history in LM text space predicts "
                "which items they interact with; it ranks items nobody has interacted with yet "
                "(route text_cf; the cold slice of evaluation_report). Its regularisation and "
                "user weighting, then its blend with the LM's own view (raw text similarity of the "
                "history: 0 TextCF alone, 1 the LM alone), are chosen on pseudo-cold validation items "
                "held out of training (the protocol's rule 4; the test split is never read), then it is refit on all "
                "of training. Stored atomically at models/text_cf/text_cf.npz.",
)
def text_cf_model(context: dg.AssetExecutionContext, warehouse: Warehouse, home: PipelineHome) -> dg.MaterializeResult:
    ids, vectors, encoder = tables.item_vectors(warehouse)
    features = text_cf.item_features(vectors)
    fit_matrix, judge = text_cf.pseudo_cold_judge(tables.training_rows(warehouse), ids, features)
    tuned = text_cf.tune(fit_matrix, features, judge)
    rm = tables.rating_matrix(warehouse)
    model = text_cf.fit_for_serving(rm.matrix, rm.item_ids, features, tuned.lam, tuned.alpha, context.run.run_id,
                                    tuned.blend)
    text_cf.save(model, home.layout.text_cf_model, encoder, tuned)
    context.log.info(f"TextCF: lambda {tuned.lam}, alpha {tuned.alpha}, blend with the LM's view {tuned.blend}, "
                     f"pseudo-cold Recall@20 {tuned.recall:.4f} (by blend: {tuned.blends})")
    grid = pl.DataFrame([{"lambda": lam, "alpha": alpha, "pseudo_cold_recall@20": round(value, 4)}
                         for (lam, alpha), value in tuned.grid.items()])
    return dg.MaterializeResult(metadata={
        "lambda": tuned.lam, "alpha": tuned.alpha, "blend": tuned.blend, "encoder": encoder,
        "blends": markdown_table(pl.DataFrame([{"blend": b, "pseudo_cold_recall@20": round(v, 4)}
                                               for b, v in tuned.blends.items()])),
        "untrained_items": len(model.untrained_ids),
        "pseudo_cold_recall@20": dg.MetadataValue.float(round(tuned.recall, 4)),
        "grid": markdown_table(grid, rows=len(tuned.grid)),
        "path": dg.MetadataValue.path(str(home.layout.text_cf_model)),
    })
