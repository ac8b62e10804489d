"""What the ``recall_candidates`` asset computes: every route's lists for every user of the
rating matrix, fused and re-ranked, as the rows of ``recall.candidates``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recall_pipeline.core.training.ease.model import EaseModel
from recall_pipeline.core.features.rating_matrix import RatingMatrix
from recall_pipeline.core.training.ease.store import StoredEase, save_ease
from recall_pipeline.core.recall import serving_version
from recall_pipeline.core.recall.published_tables import candidates_frame
from recall_pipeline.core.recall.routes import (
    ROUTES, MergedLists, ModelRoute, RouteSettings, TextCFRoute, fit_ease_route, merge_routes, route_lists,
)
from recall_pipeline.core.training.route_trust import served
from recall_pipeline.core.training.text_cf import TextCF, item_features


@dataclass(frozen=True)
class RecallInputs:
    """What one recall run reads: the catalogue and its LM index, the rating matrix, the
    profiles, and the serving two-tower model's route with its version key."""

    item_ids: np.ndarray
    item_vectors: np.ndarray
    encoder: str
    lm_index: object
    lm_index_type: str              # as the index manifest names it (flat, hnsw, ivf)
    rm: RatingMatrix
    profiles: pl.DataFrame          # user_id, embedding
    interest_owners: np.ndarray
    interests: np.ndarray
    model_route: ModelRoute
    model_key: str
    item_counts: np.ndarray         # training interactions per item over *all* users
    text_cf: TextCF | None = None   # the cold-item route's model (None: none fitted yet)
    two_tower_trust: float = 1.0    # the serving version's factor on the two-tower route's weight
                                    # (core.training.route_trust; every recall of these inputs applies it)

    # ``rm``, ``profiles``, interests and ``model_route`` may cover only some users (the users a
    # feedback refresh recomputes); ``item_counts`` always covers the whole matrix (in a feedback
    # refresh, the counts stored with the reused EASE model: :func:`with_stored_counts`).

    @property
    def model_version(self) -> str:
        """What every candidate row names as its source: model version plus encoder."""
        return f"{self.model_key}+{self.encoder}"


def two_tower_route(model, index, train: pl.DataFrame, rm: RatingMatrix) -> ModelRoute:
    """The model's user vectors from each user's latest training history, with its index."""
    from recall_pipeline.core.training import recall_model, two_tower

    rows, history, ratings = recall_model.training_sequences(train, rm).last_windows(model.architecture.history_length)
    return ModelRoute(index, rows, two_tower.user_vectors(model, history, ratings))


# Bytes one route-list slot (a user x depth entry of one route, or of one interest vector) costs
# while a block of users is recalled: the FAISS results and their re-ordering, the interest
# route's frame and its sort, the fusion's sparse rank matrices and the MMR pool. Measured with
# bench/perf/recall_blocks.py (the slope over two block sizes): 87 and 98 bytes in two runs, plus about
# 200 MB per block whatever its size at 100,000 items (bench/results/perf/recall_blocks.txt).
BYTES_PER_LIST_SLOT = 128
DEFAULT_BLOCK_BUDGET_BYTES = 512 * 2**20


def block_users(inputs: RecallInputs, settings: RouteSettings, budget_bytes: int = DEFAULT_BLOCK_BUDGET_BYTES) -> int:
    """How many users one block recalls within ``budget_bytes``: each user has a list per route
    computed (:meth:`RouteSettings.computes`) and, when the interest route is, one per interest
    vector, ``settings.depth`` slots each (at least one user)."""
    lists = float(sum(settings.computes(name) for name in ROUTES))
    if settings.computes("lm_interest"):
        lists += len(inputs.interest_owners) / max(len(inputs.rm.user_ids), 1)
    return max(1, int(budget_bytes // (settings.depth * lists * BYTES_PER_LIST_SLOT)))


def recall_blocks(inputs: RecallInputs, settings: RouteSettings, k: int, rows: np.ndarray | None = None,
                  ease: EaseModel | None = None, budget_bytes: int = DEFAULT_BLOCK_BUDGET_BYTES,
                  ) -> Iterator[tuple[np.ndarray, MergedLists]]:
    """:func:`recall` a block of users at a time: (the block's rating-matrix rows, their lists).

    What every block shares is prepared once (EASE fitted on the whole matrix unless given, the
    TextCF route's item features and, for many users of a large catalogue, its index, the
    profile vectors); what grows with users (route lists,
    FAISS results, the interest route's frame, the fusion) exists for one block only, so a shard
    of any size recalls within the same memory. A user's lists do not depend on the users
    recalled with them, so the blocks' lists are the one-pass lists."""
    rows = np.arange(len(inputs.rm.user_ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    settings = served(settings, inputs.two_tower_trust)
    has_history = np.diff(inputs.rm.matrix.indptr) > 0
    if ease is None and has_history[rows].any():
        ease = fit_ease_route(inputs.rm, settings)
    ranked = len(rows) if settings.computes("text_cf") else 0  # no index built for a route not computed
    text_cf = (TextCFRoute.build(inputs.text_cf, item_features(inputs.item_vectors), inputs.item_ids, ranked)
               if inputs.text_cf else None)
    profile_owners = inputs.profiles["user_id"].to_numpy()
    profiles = np.ascontiguousarray(inputs.profiles["embedding"].to_numpy(), dtype=np.float32)
    step = block_users(inputs, settings, budget_bytes)
    for start in range(0, len(rows), step):
        block = rows[start:start + step]
        lists = route_lists(inputs.lm_index, inputs.item_ids, inputs.rm, profile_owners, profiles,
                            inputs.interest_owners, inputs.interests, settings, inputs.model_route, block,
                            ease=ease, popularity=inputs.item_counts, text_cf=text_cf)
        yield block, merge_routes(lists, inputs.item_vectors, k, settings, train_counts=inputs.item_counts)


def recall(inputs: RecallInputs, settings: RouteSettings, k: int, rows: np.ndarray | None = None,
           ease: EaseModel | None = None, budget_bytes: int = DEFAULT_BLOCK_BUDGET_BYTES) -> MergedLists:
    """Every route's lists, merged with the popularity discount and re-ranked to ``k``, for the
    rating-matrix ``rows`` of ``inputs.rm`` (default every user; a shard passes its own);
    ``ease``: a fitted EASE model (default: EASE fitted on ``inputs.rm``, which must then be
    the whole matrix). Computed in blocks (:func:`recall_blocks`), returned whole."""
    blocks = [merged for _, merged in recall_blocks(inputs, settings, k, rows, ease, budget_bytes)]
    if not blocks:  # e.g. feedback that changed no history
        none = np.zeros((0, k), dtype=np.int64)
        return MergedLists(none, np.zeros((0, k), np.float32), {name: none for name in ROUTES},
                           np.zeros((0, k), dtype=object))
    return MergedLists.concat(blocks)


def fit_missing_ease(rm: RatingMatrix, settings: RouteSettings, path: Path, run_id: str, why: str) -> None:
    """No stored EASE model fits this catalogue (``why``): fit one on the training matrix into the
    run's staged version at ``path``, so it is served and published with the lists."""
    save_ease(fit_ease_route(rm, settings), path, rm.item_ids, run_id, settings.ease_max_items, rm.item_counts())
    serving_version.record_part(path.parent, serving_version.EASE, f"fitted by run {run_id}: {why}")


def with_stored_counts(inputs: RecallInputs, stored: StoredEase | None) -> RecallInputs:
    """``inputs`` with the item counts stored beside a reused EASE model (a feedback refresh
    ranks popularity and discounts with the counts of the full refresh whose lists it copies)."""
    if stored is None or stored.item_counts is None:
        return inputs
    if len(stored.item_counts) != len(inputs.item_ids):
        raise ValueError(f"the stored item counts cover {len(stored.item_counts)} items, the catalogue "
                         f"{len(inputs.item_ids)}")
    return dataclasses.replace(inputs, item_counts=stored.item_counts)


def candidates_table(inputs: RecallInputs, merged: MergedLists, run_id: str,
                     rows: np.ndarray | None = None) -> pl.DataFrame:
    """The rows of ``recall.candidates`` for this run (``rows``: the users ``merged`` holds, as
    :func:`recall` was given them)."""
    user_ids = None if rows is None else inputs.rm.user_ids[rows]
    return candidates_frame(inputs.rm, merged, user_ids).select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(inputs.model_version).alias("model_version"),
        pl.all(),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("created_at"),
    )
