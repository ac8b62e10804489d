"""Probe: a release-time prior for cold items (the release year against the year of the user's last
training event), on pseudo-cold validation only (the protocol's rule 4: training items held out
with their interactions; the test split is never read).

A user rates a film after it is out and, in MovieLens, mostly films of the years around their
own activity: the gap between an item's release year and the year of the user's last (or first)
fit interaction says much about whether they rate it, and TextCF, linear in the text features,
cannot express that interaction between the user's time and the item's. The prior is the
empirical rate at which fit (user, item) pairs of each gap are interactions: interactions of
that gap / (user, trained item) pairs of that gap, smoothed towards the overall rate; both read
the fit part only. The cold ranking scores TextCF (the published lambda 0.03 / alpha 0.5),
z-scored per user, plus ``beta`` x log(rate).

    .venv/bin/python -m bench.experiments.probe_cold_time --home <bundled home>

Recorded run: bench/results/experiments/probe_cold_time.txt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts  # noqa: E402
from recall_pipeline.core.evaluation.protocol import COLD_K  # noqa: E402
from recall_pipeline.core.features.rating_matrix import build_rating_matrix  # noqa: E402
from recall_pipeline.core.features.split import pseudo_cold_split  # noqa: E402
from recall_pipeline.core.recall.ranking import top_k_dense  # noqa: E402
from recall_pipeline.core.training import text_cf  # noqa: E402
from recall_pipeline.settings import HomeLayout  # noqa: E402

from bench.validation import read_split_and_embeddings  # noqa: E402

LOW, HIGH = -60, 15          # gaps in years, clamped; a missing year is one more bucket
SMOOTHING = 50.0             # pseudo-pairs of the overall rate added to each gap's
BETAS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)


def item_years(home: Path, ids: np.ndarray) -> np.ndarray:
    """Release year per catalogue item (NaN: unknown)."""
    with duckdb.connect(str(HomeLayout(home).warehouse), read_only=True) as con:
        items = con.sql("select item_id, try_cast(year as integer) as year from clean.items order by item_id").pl()
    assert np.array_equal(items["item_id"].to_numpy(), ids)
    return items["year"].cast(pl.Float64).fill_null(np.nan).to_numpy()


def user_years(fit: pl.DataFrame, user_ids: np.ndarray, which: str) -> np.ndarray:
    """Year of each matrix row's last ("max") or first ("min") fit interaction."""
    years = fit.group_by("user_id").agg(getattr(pl.col("timestamp"), which)().dt.year().alias("year"))
    lookup = dict(years.iter_rows())
    return np.array([lookup.get(u, np.nan) for u in user_ids.tolist()], dtype=np.float64)


def gap_bucket(item_year: np.ndarray, user_year: np.ndarray) -> np.ndarray:
    """Clamped gap item year - user year, shifted to 0.., and the last bucket for unknown years."""
    gap = item_year - user_year
    return np.where(np.isnan(gap), HIGH - LOW + 1, np.clip(np.nan_to_num(gap), LOW, HIGH) - LOW).astype(np.int64)


def gap_log_rate(matrix, trained: np.ndarray, years_i: np.ndarray, years_u: np.ndarray) -> np.ndarray:
    """log rate of interaction per gap bucket, from the fit matrix: interactions of the gap /
    (user, trained item) pairs of the gap, smoothed towards the overall rate."""
    coo = matrix.tocoo()
    buckets = HIGH - LOW + 2
    hits = np.bincount(gap_bucket(years_i[coo.col], years_u[coo.row]), minlength=buckets).astype(np.float64)
    pairs = np.zeros(buckets)
    trained_years = years_i[trained]
    for user_year in years_u:
        pairs += np.bincount(gap_bucket(trained_years, np.full(len(trained_years), user_year)), minlength=buckets)
    overall = hits.sum() / pairs.sum()
    return np.log((hits + SMOOTHING * overall) / (pairs + SMOOTHING))


def recall(scores: np.ndarray, relevant) -> float:
    lists, _ = top_k_dense(scores, COLD_K)
    return float(recall_at_k(hit_matrix(lists, relevant), relevant_counts(relevant), COLD_K).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    args = parser.parse_args()
    split, ids, vectors = read_split_and_embeddings(Path(args.home))
    judge = text_cf.pseudo_cold(split, ids)
    features = text_cf.item_features(vectors)
    model = text_cf.fit(judge.matrix, features, 0.03, 0.5)
    print(f"pseudo-cold: {len(judge.rows)} users, {len(judge.columns)} items; TextCF alone "
          f"{judge.recall(model, features):.4f}")
    scores = model.user_queries(judge.matrix, features, judge.rows) @ features[judge.columns].T
    z = (scores - scores.mean(axis=1, keepdims=True)) / np.maximum(scores.std(axis=1, keepdims=True), 1e-12)
    print(f"  the same, ranked here: {recall(scores, judge.relevant):.4f}; z-scored {recall(z, judge.relevant):.4f}")

    pseudo = pseudo_cold_split(split)
    fit = pseudo.filter(pl.col("part") == "train")
    rm = build_rating_matrix(pseudo, ids)  # the judge's matrix, for its user order
    assert (rm.matrix != judge.matrix).nnz == 0
    rm_users = rm.user_ids
    years_i = item_years(Path(args.home), ids)
    trained = np.flatnonzero(np.diff(judge.matrix.tocsc().indptr) > 0)
    priors = {}
    for which in ("max", "min"):
        years_u = user_years(fit, rm_users, which)
        log_rate = gap_log_rate(judge.matrix, trained, years_i, years_u)
        rows_years = years_u[judge.rows]
        prior = log_rate[gap_bucket(years_i[judge.columns][None, :], rows_years[:, None])]
        priors[which] = prior
        print(f"gap to the user's {'last' if which == 'max' else 'first'} fit year: log rate by gap "
              + " ".join(f"{g}:{v:.1f}" for g, v in zip(range(LOW, HIGH + 1, 5), log_rate[::5])))
        print(f"  the prior alone: {recall(prior + 1e-6 * z, judge.relevant):.4f}")
        for beta in BETAS:
            print(f"  TextCF z + {beta} x log rate: {recall(z + beta * prior, judge.relevant):.4f}", flush=True)
    for beta in BETAS[1:]:
        print(f"both gaps, TextCF z + {beta} x (log rate last + log rate first): "
              f"{recall(z + beta * (priors['max'] + priors['min']), judge.relevant):.4f}", flush=True)


if __name__ == "__main__":
    main()
