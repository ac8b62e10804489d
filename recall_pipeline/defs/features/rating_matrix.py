"""``rating_matrix``: the protocol's train / warm test / cold test split and the CSR matrix."""

import dagster as dg

from recall_pipeline.core.features.rating_matrix import build_rating_matrix, matrix_tables
from recall_pipeline.core.features.split import SplitProtocol, split_keeping_sides, split_summary
from recall_pipeline.defs import tables
from recall_pipeline.defs.config import config_from
from recall_pipeline.resources import Warehouse


SplitConfig = config_from(SplitProtocol, "SplitConfig",
                          "The split protocol of docs/EVALUATION.md; the defaults are the reference benchmark.")


@dg.asset(
    group_name="features",
    deps=["cleaned_interactions", "cleaned_item_text"],
    kinds={"duckdb", "scipy"},
    pool="warehouse",
    description="The evaluation protocol's split (DuckDB features.interactions_split, part in "
                "train / warm_test / cold_test, with the validation cut), which side every item is "
                "on (features.item_sides: the protocol's permutation for the first split, kept "
                "afterwards; an item added later is placed by a seeded hash of its id) and the user x item "
                "CSR matrix of training ratings (its entries in features.rating_matrix, its id "
                "maps in features.user_index and features.item_index), all written in one "
                "transaction.",
)
def rating_matrix(context: dg.AssetExecutionContext, config: SplitConfig,
                  warehouse: Warehouse) -> dg.MaterializeResult:
    clean = warehouse.query("select user_id, item_id, rating, timestamp from clean.interactions")
    items = warehouse.query("select item_id from clean.items")["item_id"]
    split, sides = split_keeping_sides(clean, items, SplitProtocol(**config.model_dump()), tables.item_sides(warehouse))
    matrix = build_rating_matrix(split, items.to_numpy())
    # one transaction: readers see the split, the sides and the matrix of one run, never a mix
    warehouse.replace_tables({"features.item_sides": sides, "features.interactions_split": split,
                              **matrix_tables(matrix)})
    summary = split_summary(split)
    context.log.info(f"split: {summary}")
    return dg.MaterializeResult(metadata={
        **{key: dg.MetadataValue.int(value) for key, value in summary.items()},
        "users": len(matrix.user_ids),
        "items": len(matrix.item_ids),
        "nonzeros": int(matrix.matrix.nnz),
        "cold_side_items": int(sides["is_cold"].sum()),
        "items_placed_by_hash": int((sides["rule"] == "hash").sum()),
    })
