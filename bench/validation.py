"""The validation cut of a home that a full run has filled, shared by the tuning tools
(``bench.tuning``) and the experiments (``bench.experiments``).

Every figure here is scored on the training split alone (docs/EVALUATION.md, Split 4): the routes
see the *fit* part, and lists are judged by Recall@50 on the held-out part; the test split is
never read. Nothing runs at import; the tools import what they need:

- :func:`read_split_and_embeddings`: the split, the item ids and their LM vectors of a home;
- :func:`validation_cut`: the fit part's rating matrix and the held-out relevance;
- :func:`validation_model_route`, :func:`two_tower_lists`: the two-tower route of the model's
  validation phase, and its lists (optionally cached in an ``.npy`` file);
- :func:`at_50`: Recall@50, coverage@50 and long-tail share@50 of a set of lists;
- :class:`ValidationFusion`, :func:`validation_fusion`, :func:`probe_arguments`: what the
  experiments on the fused lists share (their options, the cut, the two-tower lists).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from recall_pipeline.core.evaluation.metrics import (
    catalogue_coverage, head_items, hit_matrix, long_tail_share, recall_at_k, relevant_counts,
)
from recall_pipeline.core.evaluation.protocol import validation_matrices
from recall_pipeline.core.features.rating_matrix import build_rating_matrix
from recall_pipeline.core.recall.fusion import reciprocal_rank_fusion
from recall_pipeline.core.recall.index import build_exact_index
from recall_pipeline.core.recall.ranking import search_top_k
from recall_pipeline.core.recall.routes import ModelRoute, RouteSettings, popularity_weights
from recall_pipeline.core.training import two_tower
from recall_pipeline.settings import HomeLayout


def at_50(final: np.ndarray, relevant, n_items: int, head) -> tuple[float, float, float]:
    """(Recall@50, coverage@50, long-tail share@50) of the validation users' lists ``final``."""
    recall = float(recall_at_k(hit_matrix(final, relevant), relevant_counts(relevant), 50).mean())
    return recall, catalogue_coverage(final, 50, n_items), float(long_tail_share(final, 50, head).mean())


def read_split_and_embeddings(home: Path) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """(the split, the item ids, their LM vectors in that order) of a home a full run has filled."""
    with duckdb.connect(str(HomeLayout(home).warehouse), read_only=True) as con:
        split = con.sql("select * from features.interactions_split").pl()
        emb = con.sql("select item_id, embedding from features.item_embeddings order by item_id").pl()
    return split, emb["item_id"].to_numpy(), np.ascontiguousarray(emb["embedding"].to_numpy(), dtype=np.float32)


def validation_model_route(fit_rows: pl.DataFrame, rm, ids: np.ndarray, vectors: np.ndarray, holdout) -> ModelRoute:
    """The two-tower route of the model's validation phase: trained on the fit part, early-stopped
    on the held-out part, not refit; user vectors from the fit part's latest histories."""
    fit_seq = two_tower.build_sequences(fit_rows, rm.user_ids, ids)
    model = two_tower.train_two_tower(vectors, fit_seq, fit_seq, holdout,
                                      training=two_tower.TrainingSettings(refit="none")).model
    user_rows, history, ratings = fit_seq.last_windows(model.architecture.history_length)
    return ModelRoute(build_exact_index(two_tower.item_vectors(model)), user_rows,
                      two_tower.user_vectors(model, history, ratings))


def two_tower_lists(split, rm, ids, vectors, holdout, settings: RouteSettings, cache: Path | None) -> np.ndarray:
    """The validation two-tower route's lists for every fit user (read from ``cache`` when there)."""
    if cache is not None and cache.exists():
        return np.load(cache)
    fit_rows = split.filter(pl.col("val_part") == "fit").select("user_id", "item_id", "rating", "timestamp")
    route = validation_model_route(fit_rows, rm, ids, vectors, holdout)
    lists = np.full((len(rm.user_ids), settings.depth), -1, dtype=np.int64)
    lists[route.rows], _ = search_top_k(route.index, route.user_vectors, rm.matrix, route.rows,
                                        settings.depth, seed=settings.seed)
    if cache is not None:
        np.save(cache, lists)
    return lists


def validation_cut(split: pl.DataFrame, ids: np.ndarray):
    """(rating matrix of the fit part as training, held-out relevance, the rows of users with a
    relevant held-out item, their relevance): what every validation figure here is scored on."""
    as_train = split.with_columns(part=pl.when(pl.col("val_part") == "fit").then(pl.lit("train"))
                                  .otherwise(pl.lit("other")))
    rm = build_rating_matrix(as_train, ids)
    _, holdout = validation_matrices(split, rm)
    rows = np.flatnonzero(relevant_counts(holdout))
    return rm, holdout, rows, holdout[rows]


@dataclass(frozen=True)
class ValidationFusion:
    """What the probes of the fused lists share: the validation cut of a filled home, the
    validation two-tower route's lists for every fit user, and the fit part's item counts, head
    items and popularity discount (at the default RouteSettings)."""

    split: pl.DataFrame
    ids: np.ndarray
    vectors: np.ndarray
    rm: object
    holdout: object
    rows: np.ndarray        # users with a relevant held-out item
    relevant: object
    two_tower: np.ndarray
    counts: np.ndarray
    head: np.ndarray
    weights: np.ndarray     # the default popularity discount per item
    every: np.ndarray       # users with a fit history

    def fused_at_50(self, routes: dict[str, np.ndarray], route_weights: dict[str, float], c: float = RouteSettings.rrf_c,
                    item_weights: np.ndarray | None = None) -> tuple[float, float, float]:
        """(Recall@50, coverage@50, long tail@50) of the two-tower lists and ``routes`` reciprocal-rank
        fused (``item_weights``: default the popularity discount), MMR off."""
        fused = reciprocal_rank_fusion({"two_tower": self.two_tower, **routes}, route_weights, 50, len(self.ids), c,
                                       RouteSettings.seed, self.weights if item_weights is None else item_weights)
        return at_50(fused.items[self.rows], self.relevant, len(self.ids), self.head)

    def alone_at_50(self, lists: np.ndarray) -> tuple[float, float, float]:
        """The same figures of one route's lists."""
        return at_50(lists[self.rows], self.relevant, len(self.ids), self.head)


def probe_arguments(doc: str | None = None) -> argparse.ArgumentParser:
    """The probes' shared options: the filled home and the two-tower lists' cache."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=".recall")
    parser.add_argument("--two-tower-cache", default="", help="an .npy file keeping the two-tower lists between runs")
    return parser


def validation_fusion(home: str, two_tower_cache: str = "") -> ValidationFusion:
    """:class:`ValidationFusion` of ``home`` (the two-tower lists read from ``two_tower_cache`` when there)."""
    split, ids, vectors = read_split_and_embeddings(Path(home))
    defaults = RouteSettings()
    rm, holdout, rows, relevant = validation_cut(split, ids)
    two_tower = two_tower_lists(split, rm, ids, vectors, holdout, defaults,
                                Path(two_tower_cache) if two_tower_cache else None)
    counts = np.diff(rm.matrix.tocsc().indptr)
    return ValidationFusion(split, ids, vectors, rm, holdout, rows, relevant, two_tower, counts,
                            head_items(counts, ids), popularity_weights(counts, defaults.popularity_discount),
                            np.flatnonzero(np.diff(rm.matrix.indptr) > 0))
