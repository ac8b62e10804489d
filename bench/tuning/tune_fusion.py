"""Tune the EASE route's recency weighting, then the fusion weights of the routes, the
popularity discount and the MMR lambda on the validation cut; then the text_cf route's weight at
the chosen settings (``--text-cf-only``: that last part alone, at the current defaults;
``--ease-window-only``: the EASE route's windowed term alone, at the current defaults).

Everything is rebuilt from the *fit* part of the training split (docs/EVALUATION.md, Split 4):
the rating matrix, the user profiles and interests, EASE, and the two-tower model (its
validation phase: trained on the fit part, early-stopped on the held-out part, not refit);
lists are scored by Recall@50 on the held-out training interactions, never on the test split.
Reads a home folder that a full run has filled (for the split, the item embeddings and the item
metadata). The validation cut itself is ``bench.validation``'s. Recorded runs:
bench/results/tuning/tune_fusion.txt and tune_fusion_text_cf.txt.

    .venv/bin/python -m bench.tuning.tune_fusion [--home .recall] [--text-cf-only | --ease-window-only]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.settings import HomeLayout  # noqa: E402
from recall_pipeline.core.recall.route_selection import COVERAGE_VS_PLAIN_EASE  # noqa: E402
from recall_pipeline.core.features.encode import TextEncoder  # noqa: E402
from recall_pipeline.core.recall.index import build_exact_index  # noqa: E402
from recall_pipeline.core.evaluation.metrics import (  # noqa: E402
    catalogue_coverage, head_items, hit_matrix, recall_at_k, relevant_counts,
)
from recall_pipeline.core.features.user_profiles import build_user_profiles, interest_texts, multi_interests  # noqa: E402
from recall_pipeline.core.evaluation import baselines  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_scored  # noqa: E402
from recall_pipeline.core.recall.routes import (  # noqa: E402
    RouteSettings, TextCFRoute, ease_route, ease_route_scorer, fit_ease_route, merge_routes, route_lists,
    text_cf_route,
)
from recall_pipeline.core.training import text_cf  # noqa: E402

from bench.validation import at_50, validation_cut, validation_model_route  # noqa: E402

RECENCY_TAUS = (0.0, 3.0, 5.0, 10.0, 20.0)  # 0: the history unweighted (EASE as published)
RECENCY_FLOORS = (0.1, 0.2, 0.3, 0.5)
TWO_TOWER_WEIGHTS = (0.5, 1.0, 1.5, 2.0)
TEXT_CF_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
TEXT_CF_TAILS = (5, 10, 20)
LM_WEIGHTS = (0.0, 0.3)
MMR_LAMBDAS = (1.0, 0.7)
POPULARITY_DISCOUNTS = (0.0, 0.05, 0.075, 0.1, 0.15, 0.2)
EASE_WINDOWS = (0, 10, 20, 30, 50)                  # 0: EASE alone
EASE_WINDOW_WEIGHTS = (0.3, 0.5, 0.7, 1.0, 1.5)
# The choice (docs/EVALUATION.md lets a choice say what it selects by): the highest validation
# Recall@50 among the settings whose lists keep the product's exposure goals on validation,
# long-tail share@50 >= 0.10 and coverage@50 >= the reach target of the per-run selection
# (route_selection.COVERAGE_VS_PLAIN_EASE x plain EASE's coverage on the same validation users);
# settings within TOLERANCE of that Recall@50 count as equal (on ~650 users such differences are
# noise), and among them the highest coverage@50 wins. These are the defaults each run's
# selection (core/recall/route_selection.py) starts from; what a run serves, it chooses itself.
TOLERANCE = 0.001
LONG_TAIL_TARGET = 0.10
COVERAGE_TARGET = COVERAGE_VS_PLAIN_EASE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall", help="a home folder a full run has filled (read only)")
    parser.add_argument("--text-cf-only", action="store_true",
                        help="only the text_cf weight, at the current defaults (skips the grid above)")
    parser.add_argument("--ease-window-only", action="store_true",
                        help="only the EASE route's windowed term, at the current defaults")
    args = parser.parse_args()
    home = Path(args.home)
    with duckdb.connect(str(HomeLayout(home).warehouse), read_only=True) as con:
        split = con.sql("select * from features.interactions_split").pl()
        emb = con.sql("select item_id, embedding from features.item_embeddings order by item_id").pl()
        items = con.sql("select item_id, title, year, genres from clean.items").pl()
    ids = emb["item_id"].to_numpy()
    vectors = np.ascontiguousarray(emb["embedding"].to_numpy(), dtype=np.float32)
    fit_rows = split.filter(pl.col("val_part") == "fit").select("user_id", "item_id", "rating", "timestamp")
    # the fit part as "train": routes see only it; the held-out part is what they must find
    rm, holdout, rows, relevant = validation_cut(split, ids)
    recency, ease_model = ease_recency(rm, holdout)

    profiles = build_user_profiles(fit_rows, ids, vectors)
    interests = multi_interests(fit_rows, ids, vectors)
    texts = interest_texts(fit_rows, items)
    text_vectors = TextEncoder().encode(texts["profile_text"].to_list())
    owners = np.concatenate([interests["user_id"].to_numpy(), texts["user_id"].to_numpy()])
    interest_vectors = np.vstack([interests["embedding"].to_numpy(), text_vectors]).astype(np.float32)
    model_route = validation_model_route(fit_rows, rm, ids, vectors, holdout)
    lists = route_lists(build_exact_index(vectors), ids, rm, profiles.user_ids, profiles.vectors,
                        owners, interest_vectors, RouteSettings(**recency, compute_zero_weight_routes=True), model_route)

    print(f"validation: {len(rows)} users, fit {fit_rows.height} / held out "
          f"{split.filter(pl.col('val_part') == 'holdout').height} interactions")
    counts = np.diff(rm.matrix.tocsc().indptr)
    head = head_items(counts, ids)
    if args.ease_window_only:
        ease_window_grid(rm, ids, vectors, lists, rows, relevant, holdout, counts, head)
        return
    if args.text_cf_only:
        defaults = RouteSettings()
        w = defaults.weights
        text_cf_weight(split, rm, ids, vectors, lists, rows, relevant, counts, head,
                       (None, w["two_tower"], w["lm_profile"], defaults.popularity_discount, defaults.mmr_lambda))
        return
    print(f"{'two-tower':>9} {'lm weight':>9} {'pop disc':>8} {'mmr lambda':>10} {'recall@50':>10} "
          f"{'coverage@50':>12} {'long tail@50':>12}")
    results = []
    for tower in TWO_TOWER_WEIGHTS:
        for weight in LM_WEIGHTS:
            for discount in POPULARITY_DISCOUNTS:
                for lam in MMR_LAMBDAS:
                    settings = RouteSettings(weights={"two_tower": tower, "ease": 1.0, "lm_profile": weight,
                                                      "lm_interest": weight, "popularity": 1.0},
                                             mmr_lambda=lam, popularity_discount=discount)
                    final = merge_routes(lists, vectors, 100, settings, counts).items[rows]
                    recall, coverage, tail = at_50(final, relevant, len(ids), head)
                    results.append((recall, tower, weight, discount, lam, coverage, tail))
                    print(f"{tower:>9} {weight:>9} {discount:>8} {lam:>10} {recall:>10.4f} {coverage:>12.4f} "
                          f"{tail:>12.4f}", flush=True)
    best = max(results)
    print("best by validation Recall@50 alone: two-tower weight {1}, lm weight {2}, popularity discount {3}, "
          "mmr lambda {4} (Recall@50 {0:.4f}, coverage@50 {5:.4f}, long tail@50 {6:.4f})".format(*best))
    ease_settings = RouteSettings(weights={"two_tower": 0.0, "ease": 1.0, "lm_profile": 0.0, "lm_interest": 0.0,
                                           "popularity": 1.0}, popularity_discount=0.0, mmr_lambda=1.0)
    # the exposure goal's reference is EASE as the baseline ranks: the history unweighted
    plain = ease_route_scorer(rm, RouteSettings(ease_recency_tau=0.0), ease_model)
    plain_lists, _ = top_k_scored(plain, rows, RouteSettings.depth, len(ids), rm.matrix)
    ease_lists = dict(lists, ease=np.full_like(lists["ease"], -1))
    ease_lists["ease"][rows] = plain_lists
    ease_coverage = catalogue_coverage(merge_routes(ease_lists, vectors, 100, ease_settings, counts).items[rows],
                                       50, len(ids))
    eligible = [r for r in results if r[6] >= LONG_TAIL_TARGET and r[5] >= COVERAGE_TARGET * ease_coverage]
    pool = eligible or results
    top = max(pool)[0]
    chosen = max((r for r in pool if r[0] >= top - TOLERANCE), key=lambda r: r[5])
    print(f"EASE alone: coverage@50 {ease_coverage:.4f}; {len(eligible)} settings keep long tail@50 >= "
          f"{LONG_TAIL_TARGET} and coverage@50 >= {COVERAGE_TARGET}x EASE's")
    print(f"chosen: two-tower weight {chosen[1]}, lm weight {chosen[2]}, popularity discount {chosen[3]}, "
          f"mmr lambda {chosen[4]} (Recall@50 {chosen[0]:.4f}, coverage@50 {chosen[5]:.4f}, "
          f"long tail@50 {chosen[6]:.4f})")
    text_cf_weight(split, rm, ids, vectors, lists, rows, relevant, counts, head, chosen)


def ease_recency(rm, holdout) -> tuple[dict[str, float], baselines.EaseModel]:
    """The EASE route's recency weighting (RouteSettings.ease_recency_tau/floor) with the best
    validation Recall@50 of the EASE route alone (the first of equals; tau 0 first), and the
    EASE model fitted on the fit part that every setting scored with."""
    model = baselines.fit_ease(rm.matrix, RouteSettings.ease_lambda, RouteSettings.ease_max_items)[1]
    grid = [(0.0, 0.0)] + [(tau, floor) for tau in RECENCY_TAUS if tau for floor in RECENCY_FLOORS]
    results = []
    for tau, floor in grid:
        scorer = ease_route_scorer(rm, RouteSettings(ease_recency_tau=tau, ease_recency_floor=floor), model)
        recall = baselines.validation_recall(scorer, rm.matrix, holdout)
        results.append((recall, -len(results), tau, floor))
        print(f"EASE route, recency tau {tau:>4} floor {floor:>4}: validation Recall@50 {recall:.4f}", flush=True)
    recall, _, tau, floor = max(results)
    print(f"chosen recency: tau {tau}, floor {floor} (EASE route Recall@50 {recall:.4f}, unweighted "
          f"{results[0][0]:.4f})")
    return {"ease_recency_tau": tau, "ease_recency_floor": floor}, model


def ease_window_grid(rm, ids, vectors, lists, rows, relevant, holdout, counts, head) -> None:
    """The EASE route's windowed term (RouteSettings.ease_window, ease_window_weight;
    core.training.windowed_ease) at the current fusion defaults: every setting's validation
    Recall@50 for the route alone and in the fused lists (with coverage and long tail, which the
    fusion's choice keeps). The choice: the best fused Recall@50 among the settings that keep the
    exposure of the lists without the term (coverage@50 and long tail@50 at least as high less
    TOLERANCE's share), the first of equals (smaller window, smaller weight)."""
    defaults = RouteSettings()
    every = np.flatnonzero(np.diff(rm.matrix.indptr) > 0)
    print(f"{'window':>6} {'weight':>6} {'route recall@50':>15} {'fused recall@50':>15} {'coverage@50':>11} "
          f"{'long tail@50':>12}")
    results = []
    for window in EASE_WINDOWS:
        for weight in EASE_WINDOW_WEIGHTS if window else (0.0,):
            settings = replace(defaults, ease_window=window, ease_window_weight=weight)
            model = fit_ease_route(rm, settings)
            route = baselines.validation_recall(ease_route_scorer(rm, settings, model), rm.matrix, holdout)
            ease = np.full_like(lists["ease"], -1)
            ease[every] = ease_route(rm, settings, every, model)
            final = merge_routes(dict(lists, ease=ease), vectors, 100, settings, counts).items[rows]
            recall, coverage, tail = at_50(final, relevant, len(ids), head)
            results.append((window, weight, route, recall, coverage, tail))
            print(f"{window:>6} {weight:>6} {route:>15.4f} {recall:>15.4f} {coverage:>11.4f} {tail:>12.4f}", flush=True)
    base = results[0]
    keep = [r for r in results if r[4] >= base[4] * (1 - TOLERANCE) and r[5] >= base[5] * (1 - TOLERANCE)]
    best = max(r[3] for r in keep)
    chosen = next(r for r in keep if r[3] == best)
    print(f"chosen: window {chosen[0]}, weight {chosen[1]} (route Recall@50 {chosen[2]:.4f}, fused {chosen[3]:.4f}, "
          f"coverage@50 {chosen[4]:.4f}, long tail@50 {chosen[5]:.4f}; without the term: route {base[2]:.4f}, "
          f"fused {base[3]:.4f}, coverage@50 {base[4]:.4f}, long tail@50 {base[5]:.4f})")


def text_cf_weight(split, rm, ids, vectors, lists, rows, relevant, counts, head, chosen) -> None:
    """The text_cf route's weight at the chosen settings: it proposes only items without training
    interactions, never relevant on validation, so its weight trades validation Recall@50 for
    the exposure of cold items; the largest weight of TEXT_CF_WEIGHTS that keeps Recall@50 within
    TOLERANCE of the lists without the route. TextCF is tuned on pseudo-cold items of the fit
    part (rule 4) and fitted on the fit part, as the pipeline does on training."""
    fit_split = split.filter(pl.col("val_part") == "fit").with_columns(part=pl.lit("train"))
    features = text_cf.item_features(vectors)
    fit_matrix, judge = text_cf.pseudo_cold_judge(fit_split, ids, features)
    tuned = text_cf.tune(fit_matrix, features, judge)
    model = text_cf.fit_for_serving(rm.matrix, ids, features, tuned.lam, tuned.alpha, "validation")
    print(f"TextCF on the fit part: lambda {tuned.lam}, alpha {tuned.alpha}, pseudo-cold Recall@20 {tuned.recall:.4f}; "
          f"{len(model.untrained_ids)} items without fit interactions")
    lists = dict(lists, text_cf=text_cf_route(TextCFRoute.build(model, features, rm.item_ids), rm, np.arange(len(rm.user_ids)), 200))
    base_weights = {"two_tower": chosen[1], "ease": 1.0, "lm_profile": chosen[2], "lm_interest": chosen[2],
                    "popularity": 1.0}
    results = []
    for weight in TEXT_CF_WEIGHTS:
        settings = RouteSettings(weights={**base_weights, "text_cf": weight}, mmr_lambda=chosen[4],
                                 popularity_discount=chosen[3])
        final = merge_routes(lists, vectors, 100, settings, counts).items[rows]
        recall, coverage, tail = at_50(final, relevant, len(ids), head)
        untrained = np.isin(ids[np.where(final >= 0, final, 0)], model.untrained_ids) & (final >= 0)
        results.append((weight, recall))
        print(f"text_cf weight {weight:>4}: Recall@50 {recall:.4f}, coverage@50 {coverage:.4f}, "
              f"long tail@50 {tail:.4f}, untrained items per list: "
              f"{untrained[:, :50].sum(axis=1).mean():.2f} in the top 50, {untrained.sum(axis=1).mean():.2f} in 100", flush=True)
    without = results[0][1]
    weight = max(w for w, recall in results if recall >= without - TOLERANCE)
    print(f"chosen text_cf weight: {weight}")
    settings = RouteSettings(weights={**base_weights, "text_cf": 0.0}, mmr_lambda=chosen[4],
                             popularity_discount=chosen[3])
    fused = merge_routes(lists, vectors, 100, settings, counts).items[rows]
    proposals = lists["text_cf"][rows]
    for tail in (0, *TEXT_CF_TAILS):  # the last `tail` places go to text_cf's best items not listed yet
        final = fused.copy()
        if tail:
            for user in range(len(final)):
                head = final[user, :100 - tail]
                extra = [item for item in proposals[user] if item >= 0 and item not in set(head)][:tail]
                final[user, 100 - tail:100 - tail + len(extra)] = extra
        hits, n_rel = hit_matrix(final, relevant), relevant_counts(relevant)
        untrained = np.isin(ids[np.where(final >= 0, final, 0)], model.untrained_ids) & (final >= 0)
        print(f"text_cf tail of {tail:>2}: Recall@50 {float(recall_at_k(hits, n_rel, 50).mean()):.4f}, Recall@100 "
              f"{float(recall_at_k(hits, n_rel, 100).mean()):.4f}, coverage@100 {catalogue_coverage(final, 100, len(ids)):.4f}, "
              f"untrained items per list {untrained.sum(axis=1).mean():.2f}", flush=True)


if __name__ == "__main__":
    main()
