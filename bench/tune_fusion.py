"""Tune the fusion weights of the routes and the MMR lambda on the validation cut.

Everything is rebuilt from the *fit* part of the training split (docs/EVALUATION.md, Split 4):
the rating matrix, the user profiles and interests, EASE, and the two-tower model (its
validation phase: trained on the fit part, early-stopped on the held-out part, not refit);
lists are scored by Recall@50 on the held-out training interactions, never on the test split. Reads a home folder that a full run
has filled (for the split, the item embeddings and the item metadata).

    .venv/bin/python bench/tune_fusion.py [--home .recall]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.core.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.evaluation import validation_matrices  # noqa: E402
from recall_pipeline.core.index import build_exact_index  # noqa: E402
from recall_pipeline.core.matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.metrics import catalogue_coverage, hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.profiles import build_user_profiles, interest_texts, multi_interests  # noqa: E402
from recall_pipeline.core.routes import ModelRoute, RouteSettings, merge_routes, route_lists  # noqa: E402
from recall_pipeline.core import two_tower  # noqa: E402

TWO_TOWER_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
LM_WEIGHTS = (0.0, 0.3)
MMR_LAMBDAS = (1.0, 0.85, 0.7)
# Settings whose validation Recall@50 is within this of the best are taken as equal (on ~650
# users such differences are noise); among them the one with the highest coverage@50 wins.
TOLERANCE = 0.001


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=".recall")
    home = Path(parser.parse_args().home)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        split = con.sql("select * from features.interactions_split").pl()
        emb = con.sql("select item_id, embedding from features.item_embeddings order by item_id").pl()
        items = con.sql("select item_id, title, year, genres from clean.items").pl()
    ids = emb["item_id"].to_numpy()
    vectors = np.ascontiguousarray(emb["embedding"].to_numpy(), dtype=np.float32)
    fit_rows = split.filter(pl.col("val_part") == "fit").select("user_id", "item_id", "rating", "timestamp")
    # the fit part as "train": routes see only it; the held-out part is what they must find
    as_train = split.with_columns(part=pl.when(pl.col("val_part") == "fit").then(pl.lit("train"))
                                  .otherwise(pl.lit("other")))
    rm = build_rating_matrix(as_train, ids)
    _, holdout = validation_matrices(split, rm)
    rows = np.flatnonzero(relevant_counts(holdout))
    relevant = holdout[rows]

    profiles = build_user_profiles(fit_rows, ids, vectors)
    interests = multi_interests(fit_rows, ids, vectors)
    texts = interest_texts(fit_rows, items)
    text_vectors = TextEncoder().encode(texts["profile_text"].to_list())
    owners = np.concatenate([interests["user_id"].to_numpy(), texts["user_id"].to_numpy()])
    interest_vectors = np.vstack([interests["embedding"].to_numpy(), text_vectors]).astype(np.float32)
    fit_seq = two_tower.build_sequences(fit_rows, rm.user_ids, ids)
    model = two_tower.train_two_tower(vectors, fit_seq, fit_seq, holdout,
                                      two_tower.TwoTowerSettings(refit=False)).model
    user_rows, history, ratings = fit_seq.last_windows(model.settings.history_length)
    model_route = ModelRoute(build_exact_index(two_tower.item_vectors(model)), user_rows,
                             two_tower.user_vectors(model, history, ratings))
    lists = route_lists(build_exact_index(vectors), ids, rm, profiles.user_ids, profiles.vectors,
                        owners, interest_vectors, RouteSettings(), model_route)

    print(f"validation: {len(rows)} users, fit {fit_rows.height} / held out "
          f"{split.filter(pl.col('val_part') == 'holdout').height} interactions")
    print(f"{'two-tower':>9} {'lm weight':>9} {'mmr lambda':>10} {'recall@50':>10} {'coverage@50':>12}")
    results = []
    for tower in TWO_TOWER_WEIGHTS:
        for weight in LM_WEIGHTS:
            for lam in MMR_LAMBDAS:
                settings = RouteSettings(weights={"two_tower": tower, "ease": 1.0, "lm_profile": weight,
                                                  "lm_interest": weight, "popularity": 1.0}, mmr_lambda=lam)
                final = merge_routes(lists, vectors, 100, settings).items[rows]
                recall = float(recall_at_k(hit_matrix(final, relevant), relevant_counts(relevant), 50).mean())
                coverage = catalogue_coverage(final, 50, len(ids))
                results.append((recall, tower, weight, lam, coverage))
                print(f"{tower:>9} {weight:>9} {lam:>10} {recall:>10.4f} {coverage:>12.4f}", flush=True)
    best = max(results)
    recall, tower, weight, lam, coverage = best
    print(f"best by validation Recall@50: two-tower weight {tower}, lm weight {weight}, mmr lambda {lam} "
          f"(Recall@50 {recall:.4f}, coverage@50 {coverage:.4f})")
    recall, tower, weight, lam, coverage = max((r for r in results if r[0] >= best[0] - TOLERANCE),
                                               key=lambda r: r[4])
    print(f"chosen (within {TOLERANCE} of the best, highest coverage@50): two-tower weight {tower}, "
          f"lm weight {weight}, mmr lambda {lam} (Recall@50 {recall:.4f}, coverage@50 {coverage:.4f})")


if __name__ == "__main__":
    main()
