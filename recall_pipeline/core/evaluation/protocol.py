"""The evaluation protocol of ``docs/EVALUATION.md``: slices, metrics and baselines.

Warm slice: users with at least one relevant warm test item rank the whole catalogue minus their
own training items. Sparse slice: the warm users with at most 30 training interactions. Cold
slice: users with at least one relevant interaction on a cold item rank the cold items alone.
Metric rows carry the names SQL queries rely on: slices ``warm``/``cold``/``sparse``; metrics
``recall``, ``ndcg``, ``coverage``, ``long_tail``, ``novelty``, ``diversity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from recall_pipeline.core.evaluation import baselines
from recall_pipeline.core.ids import positions
from recall_pipeline.core.features.rating_matrix import RatingMatrix
from recall_pipeline.core.evaluation.metrics import (
    catalogue_coverage, head_items, hit_matrix, intra_list_diversity, long_tail_share, ndcg_at_k,
    novelty, paired_interval, recall_at_k, relevant_counts,
)
from recall_pipeline.core.recall.ranking import top_k_scored
from recall_pipeline.core.scoring import on_columns

LIST_LENGTH = 100
RECALL_KS = (20, 50, 100)
NDCG_KS = (10, 50)
BEYOND_K = 50
DIVERSITY_K = 10
COLD_K = 20
SPARSE_MAX_TRAIN = 30
# A warm (and sparse) user is scored over the whole catalogue, a cold user over the cold items
# alone: above this many users x items ranked a slice is scored on a seeded sample of its users,
# so that evaluating grows with users x K like the rest of the graph, not with users x items.
# The bundled data (653 x 9,066) and M (about 20,000 x 100,000) are scored whole; at 1M items
# about 2,000 warm users and, ranking about 100,000 cold items each, 20,000 cold users (a cold
# user finds few of a tenth of the catalogue's items: 2,000 could not tell the cold scorers apart).
MAX_EVALUATION_CELLS = 2_000_000_000
# The figures ``final`` is compared on with every other model, user by user (Report.comparisons).
COMPARED = (("warm", "recall", 50), ("warm", "ndcg", 10), ("cold", "recall", COLD_K))
EASE_GRID = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
KNN_GRID = (20, 50, 100, 200, 400)


@dataclass(frozen=True)
class Slice:
    """Users of a slice (rows of the rating matrix) and their relevant items (CSR, same rows)."""

    name: str
    rows: np.ndarray
    relevant: sp.csr_matrix


@dataclass(frozen=True)
class EvaluationData:
    """Everything the protocol needs to score a model's lists, built once per run."""

    rm: RatingMatrix
    warm: Slice
    sparse_mask: np.ndarray          # which warm users are sparse users
    cold: Slice
    cold_columns: np.ndarray         # cold items' columns; cold relevance is indexed by these
    train_counts: np.ndarray
    head: np.ndarray
    genres: sp.csr_matrix | None     # items x genres; None: embedding diversity instead
    item_vectors: np.ndarray | None
    # users of each slice before any sample (:data:`MAX_EVALUATION_CELLS`): warm, sparse, cold
    slice_users: dict[str, int] = field(default_factory=dict)

    @property
    def sparse(self) -> Slice:
        return Slice("sparse", self.warm.rows[self.sparse_mask], self.warm.relevant[self.sparse_mask])

    def scored_users(self) -> dict[str, int]:
        """Users each slice's figures are computed on (fewer than ``slice_users`` if sampled)."""
        return {"warm": len(self.warm.rows), "sparse": int(self.sparse_mask.sum()), "cold": len(self.cold.rows)}

    def sample_notes(self) -> list[str]:
        """One line per slice scored on a sample of its users (none at the bundled size)."""
        return [f"{name} slice scored on a seeded sample of {scored:,} of its {self.slice_users[name]:,} users"
                for name, scored in self.scored_users().items() if scored < self.slice_users.get(name, scored)]

    def sample_rows(self) -> list[dict]:
        """How many users each slice's figures were computed on, and how many the slice has
        (equal unless the slice was sampled), as metric rows of model "data", slice "users", k 0:
        ``<slice>_scored`` and ``<slice>_in_slice``."""
        scored = self.scored_users()
        return [{"model": "data", "slice": USERS_SLICE, "metric": f"{name}_{what}", "k": 0, "value": float(value)}
                for name in scored
                for what, value in (("scored", scored[name]), ("in_slice", self.slice_users.get(name, scored[name])))]


USERS_SLICE = "users"  # EvaluationData.sample_rows: users scored per slice (counts, not shares)


def sampled_slice(slice_: Slice, items_per_user: int, max_cells: int | None, seed: int = 0) -> Slice:
    """``slice_`` itself when its users x ``items_per_user`` are within ``max_cells`` (None: no
    cap); otherwise a seeded sample of ``max_cells // items_per_user`` of its users (at least
    one), in row order, with their relevant items."""
    if max_cells is None or len(slice_.rows) * items_per_user <= max_cells:
        return slice_
    keep = np.sort(np.random.default_rng(seed).choice(
        len(slice_.rows), max(1, max_cells // max(items_per_user, 1)), replace=False))
    return Slice(slice_.name, slice_.rows[keep], slice_.relevant[keep])


def _relevance(split: pl.DataFrame, part: str, rm: RatingMatrix, column: str = "part") -> sp.csr_matrix:
    rel = split.filter((pl.col(column) == part) & pl.col("is_relevant"))
    rows = positions(rm.user_ids, rel["user_id"].to_numpy(), "users")
    cols = positions(rm.item_ids, rel["item_id"].to_numpy(), "items")
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=rm.matrix.shape)
    matrix.data[:] = 1.0  # a repeated (user, item) counts once
    return matrix


def warm_slice(split: pl.DataFrame, rm: RatingMatrix) -> Slice:
    relevant = _relevance(split, "warm_test", rm)
    rows = np.flatnonzero(relevant_counts(relevant))
    return Slice("warm", rows, relevant[rows])


def genre_matrix(genres: list[list[str]]) -> sp.csr_matrix | None:
    """Items x genres indicator matrix, or None when no item has a genre."""
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for item, names in enumerate(genres):
        for name in names or []:
            rows.append(item)
            cols.append(vocabulary.setdefault(name, len(vocabulary)))
    if not vocabulary:
        return None
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genres), len(vocabulary)))


def build_evaluation_data(split: pl.DataFrame, rm: RatingMatrix, genres: list[list[str]] | None = None,
                          item_vectors: np.ndarray | None = None, max_cells: int | None = None,
                          seed: int = 0) -> EvaluationData:
    """``genres`` and ``item_vectors`` are aligned with ``rm.item_ids``. ``max_cells`` (None: no
    cap; the asset passes :data:`MAX_EVALUATION_CELLS`) bounds each slice's users x items ranked
    (a cold user ranks the cold items alone): above it the warm slice (and the sparse users within
    it) and the cold slice are seeded samples of their users (:func:`sampled_slice`);
    ``slice_users`` keeps the whole slices' sizes."""
    whole = warm_slice(split, rm)
    warm = sampled_slice(whole, len(rm.item_ids), max_cells, seed)
    # "at most 30 training interactions": rows of the split, repeats of an item included
    per_user = split.filter(pl.col("part") == "train").group_by("user_id").len()
    train_rows = np.zeros(len(rm.user_ids), dtype=np.int64)
    train_rows[positions(rm.user_ids, per_user["user_id"].to_numpy(), "users")] = per_user["len"].to_numpy()
    cold_items = np.sort(split.filter(pl.col("part") == "cold_test")["item_id"].unique().to_numpy())
    cold_columns = positions(rm.item_ids, cold_items, "cold items")
    cold_relevant = _relevance(split, "cold_test", rm)[:, cold_columns].tocsr()
    cold_rows = np.flatnonzero(relevant_counts(cold_relevant))
    cold_whole = Slice("cold", cold_rows, cold_relevant[cold_rows])
    counts = baselines.popularity_scores(rm.matrix)
    return EvaluationData(
        rm=rm,
        warm=warm,
        sparse_mask=train_rows[warm.rows] <= SPARSE_MAX_TRAIN,
        # a cold user is scored on the cold columns alone (cold_ranked: every route, baseline and
        # cold scorer of the evaluation scores given columns, scoring.with_columns)
        cold=sampled_slice(cold_whole, len(cold_columns), max_cells, seed),
        cold_columns=cold_columns,
        train_counts=counts,
        head=head_items(counts, rm.item_ids),
        genres=genre_matrix(genres) if genres is not None else None,
        item_vectors=item_vectors,
        slice_users={"warm": len(whole.rows), "sparse": int((train_rows[whole.rows] <= SPARSE_MAX_TRAIN).sum()),
                     "cold": len(cold_rows)},
    )


def _accuracy(slice_: Slice, lists: np.ndarray, recall_ks, ndcg_ks) -> dict[tuple[str, int], np.ndarray]:
    """Each user's Recall@k and NDCG@k on ``slice_``, all from one hit matrix."""
    hits, n_rel = hit_matrix(lists, slice_.relevant), relevant_counts(slice_.relevant)
    return {**{("recall", k): recall_at_k(hits, n_rel, k) for k in recall_ks},
            **{("ndcg", k): ndcg_at_k(hits, n_rel, k) for k in ndcg_ks}}


def _beyond_rows(data: EvaluationData, lists: np.ndarray) -> list[tuple[str, int, float]]:
    n_users = data.rm.matrix.shape[0]
    diversity = intra_list_diversity(lists, DIVERSITY_K, data.genres,
                                     None if data.genres is not None else data.item_vectors)
    return [
        ("coverage", BEYOND_K, catalogue_coverage(lists, BEYOND_K, len(data.rm.item_ids))),
        ("long_tail", BEYOND_K, float(long_tail_share(lists, BEYOND_K, data.head).mean())),
        ("novelty", BEYOND_K, float(novelty(lists, BEYOND_K, data.train_counts, n_users).mean())),
        ("diversity", DIVERSITY_K, float(diversity.mean())),
    ]


def list_metrics(model: str, data: EvaluationData, warm_lists: np.ndarray,
                 cold_lists: np.ndarray | None) -> list[dict]:
    """Metric rows for one model: ``warm_lists`` aligned with ``data.warm.rows`` (K >= 100),
    ``cold_lists`` with ``data.cold.rows`` (positions within the cold items)."""
    return measured(model, data, warm_lists, cold_lists)[0]


def measured(model: str, data: EvaluationData, warm_lists: np.ndarray,
             cold_lists: np.ndarray | None) -> tuple[list[dict], dict[tuple[str, str, int], np.ndarray]]:
    """(:func:`list_metrics`' rows, each user's figure of ``COMPARED`` in the slice's user
    order): the means and the per-user figures behind them come from the same hit matrices."""
    out, per_user = [], {}
    width = warm_lists.shape[1]  # a metric at K needs lists at least K long
    slices = [(data.warm, warm_lists), (data.sparse, warm_lists[data.sparse_mask])]
    for slice_, lists in slices:
        if not len(slice_.rows):
            continue
        accuracy = _accuracy(slice_, lists, RECALL_KS, NDCG_KS)
        per_user.update(_compared(slice_.name, accuracy, width))
        for metric, k, value in ([(m, k, float(v.mean())) for (m, k), v in accuracy.items()]
                                 + _beyond_rows(data, lists)):
            if k <= width:
                out.append({"model": model, "slice": slice_.name, "metric": metric, "k": k, "value": value})
    if cold_lists is not None and len(data.cold.rows):
        accuracy = _accuracy(data.cold, cold_lists, (COLD_K,), (COLD_K,))
        per_user.update(_compared("cold", accuracy, cold_lists.shape[1]))
        for (metric, k), values in accuracy.items():
            out.append({"model": model, "slice": "cold", "metric": metric, "k": k, "value": float(values.mean())})
    return out, per_user


def _compared(slice_name: str, accuracy: dict[tuple[str, int], np.ndarray],
              width: int) -> dict[tuple[str, str, int], np.ndarray]:
    """The per-user figures of ``accuracy`` that ``COMPARED`` names, where the lists are long enough."""
    return {(slice_name, m, k): v for (m, k), v in accuracy.items() if (slice_name, m, k) in COMPARED and k <= width}


def scorer_lists(scorer: baselines.Scorer, data: EvaluationData,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(warm lists, cold lists) of a scorer under the protocol's exclusions and tie-breaking."""
    rm = data.rm
    warm, _ = top_k_scored(scorer, data.warm.rows, LIST_LENGTH, len(rm.item_ids), rm.matrix, seed)
    return warm, cold_ranked(scorer, data, seed)[0]


def cold_ranked(scorer: baselines.Scorer, data: EvaluationData, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The cold slice's lists and their scores: each user's top ``COLD_K`` of the cold items
    alone (positions within ``data.cold_columns``), scored alone where the scorer can
    (``scoring.with_columns``)."""
    return cold_top_k(on_columns(scorer, data.cold_columns), data.cold.rows,
                      len(data.cold_columns), seed)


def cold_top_k(score_cold: baselines.Scorer, rows: np.ndarray, n_cold: int,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's cold ranking: for each of ``rows``, the top ``COLD_K`` among the cold items
    alone (``score_cold(rows)``: rows x ``n_cold`` scores), with the seeded ties. Used by the
    evaluation's cold slice and by the pseudo-cold validation that tunes TextCF."""
    return top_k_scored(score_cold, rows, COLD_K, n_cold, seed=seed)


@dataclass(frozen=True)
class BaselineResult:
    """A baseline's tuned hyper-parameter (if any) and its lists."""

    name: str
    warm_lists: np.ndarray
    cold_lists: np.ndarray
    parameter: str = ""
    tuned: baselines.Tuned | None = None


def validation_matrices(split: pl.DataFrame, rm: RatingMatrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(fit matrix, held-out relevance) of the validation cut, on the rating matrix's axes."""
    fit = split.filter(pl.col("val_part") == "fit")
    rows = positions(rm.user_ids, fit["user_id"].to_numpy(), "users")
    cols = positions(rm.item_ids, fit["item_id"].to_numpy(), "items")
    fit_matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=rm.matrix.shape)
    return fit_matrix, _relevance(split, "holdout", rm, column="val_part")


# Held-out users the baselines are tuned on: above it, a seeded sample (each ranks the catalogue
# once per grid value); the bundled data's 653 are all used.
BASELINE_VALIDATION_USERS = 5_000


def run_baselines(split: pl.DataFrame, data: EvaluationData, seed: int = 0,
                  ease_grid=EASE_GRID, knn_grid=KNN_GRID,
                  validation_users: int = BASELINE_VALIDATION_USERS) -> list[BaselineResult]:
    """MostPopular, ItemKNN and EASE: tuned on the validation cut (a seeded sample of at most
    ``validation_users`` held-out users, and of ``MAX_EVALUATION_CELLS`` users x items), then
    refit on training and scored on the slices' users (sampled as every model's are). EASE
    above its exact sizes is solved over the most-interacted items (``ease.model``); ItemKNN's
    similarity stays sparse at scale: memory is bounded at any size."""
    from recall_pipeline.core.recall.route_selection import selection_rows

    fit, holdout = validation_matrices(split, data.rm)
    keep = np.zeros(holdout.shape[0])
    keep[selection_rows(holdout, validation_users, MAX_EVALUATION_CELLS, seed)] = 1.0
    holdout = (sp.diags(keep) @ holdout).tocsr()
    results = [BaselineResult("MostPopular", *scorer_lists(baselines.most_popular(data.rm.matrix), data, seed))]
    # ItemKNN is tuned on one similarity ranked to the grid's largest count, then refit keeping only
    # the count that won (at L: 20 neighbours of 715,121 items kept instead of 400); the tuning's
    # maker is made inside the call, so its similarity is freed before the refit builds another
    for name, tuning, refit, grid, parameter in (
            ("ItemKNN", lambda: baselines.item_knn_maker(int(max(knn_grid))), baselines.item_knn, knn_grid, "neighbours"),
            ("EASE", baselines.ease_maker, baselines.ease, ease_grid, "lambda")):
        tuned = baselines.tune(tuning(), grid, fit, holdout, seed)
        lists = scorer_lists(refit(data.rm.matrix, tuned.value), data, seed)
        results.append(BaselineResult(name, *lists, parameter=parameter, tuned=tuned))
    return results


def recall_curve(slice_: Slice, lists: np.ndarray) -> np.ndarray:
    """Mean Recall@K for K = 1 .. len(list), for the report's curves."""
    hits = hit_matrix(lists, slice_.relevant)
    n_rel = relevant_counts(slice_.relevant)
    found = np.cumsum(hits, axis=1)
    ks = np.arange(1, lists.shape[1] + 1)
    return (found / np.minimum(ks[None, :], n_rel[:, None])).mean(axis=0)


@dataclass(frozen=True)
class ColdRanking:
    """The ranking of the cold items that ``final``'s cold figures score: per cold-slice user
    (rows of the rating matrix), the top ``COLD_K`` cold items (rating-matrix columns, -1 pads)
    and their scores."""

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray


@dataclass
class Report:
    """The figures of one evaluation: metric rows plus what the plots need, and the cold
    ranking behind ``final``'s cold figures (stored, so they can be recomputed from tables)."""

    rows: list[dict] = field(default_factory=list)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    recommended_popularity: dict[str, np.ndarray] = field(default_factory=dict)
    tuning: dict[str, dict] = field(default_factory=dict)
    cold_ranking: ColdRanking | None = None
    # model -> (slice, metric, k) of COMPARED -> each user's figure, in the slice's user order
    per_user: dict[str, dict[tuple[str, str, int], np.ndarray]] = field(default_factory=dict)

    def add(self, model: str, data: EvaluationData, warm_lists: np.ndarray,
            cold_lists: np.ndarray | None) -> None:
        rows, self.per_user[model] = measured(model, data, warm_lists, cold_lists)
        self.rows += rows
        self.curves[model] = recall_curve(data.warm, warm_lists)
        top = warm_lists[:, :BEYOND_K]
        self.recommended_popularity[model] = data.train_counts[top[top >= 0]]

    def comparisons(self, model: str = "final", seed: int = 0) -> list[dict]:
        """``model`` against every other model on each figure of ``COMPARED``, over the same
        users: the gain (``model``'s mean less the other's, as in the metric rows) and its 95%
        paired-bootstrap interval (``metrics.paired_interval``). A gap whose interval holds 0
        is within what another sample of as many users could turn around."""
        ours, out = self.per_user.get(model, {}), []
        for other, theirs in self.per_user.items():
            for key in (key for key in COMPARED if other != model and key in ours and key in theirs):
                gain, lower, upper = paired_interval(ours[key], theirs[key], seed=seed)
                out.append({"model": model, "against": other, "slice": key[0], "metric": key[1], "k": key[2],
                            "gain": gain, "lower": lower, "upper": upper, "users": len(ours[key])})
        return out


def evaluate(split: pl.DataFrame, data: EvaluationData, final_lists: np.ndarray,
             final_cold: baselines.Scorer, routes: dict[str, baselines.Scorer] | None = None,
             seed: int = 0, with_baselines: bool = True,
             baseline_users: int = BASELINE_VALIDATION_USERS) -> Report:
    """The published lists (``final``), each recall route alone, and the baselines, all on the
    same split.

    ``final_lists`` (users x K item positions) are aligned with ``rm.user_ids``. On the cold
    slice, ``final`` is the scorer the pipeline has for items nobody has interacted with
    (``final_cold``: the cold scorer of the ``text_cf`` route, TextCF or the LM view chosen over
    it on pseudo-cold validation) ranking the cold items alone; the collaborative baselines'
    cold scores all tie at zero, so theirs are the seeded random order. Each route ``name`` is reported as model ``route:<name>``.
    """
    report = Report()
    cold, cold_top = cold_ranked(final_cold, data, seed)
    report.cold_ranking = ColdRanking(data.cold.rows, np.where(cold >= 0, data.cold_columns[
        np.where(cold >= 0, cold, 0)], -1), cold_top)
    report.add("final", data, final_lists[data.warm.rows], cold)
    for name, scorer in (routes or {}).items():
        report.add(f"route:{name}", data, *scorer_lists(scorer, data, seed))
    if with_baselines:
        for result in run_baselines(split, data, seed, validation_users=baseline_users):
            report.add(result.name, data, result.warm_lists, result.cold_lists)
            if result.tuned is not None:
                report.tuning[result.name] = {"parameter": result.parameter,
                                              "value": result.tuned.value,
                                              "validation_recall@50": result.tuned.validation_recall}
    return report
