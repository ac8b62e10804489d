"""TextCF on constructed data where the right answer is known."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from recall_pipeline.core.training import text_cf


def _two_tastes(n_users: int = 40):
    """Items 0-3 read like topic e0, 4-7 like e1, 8-11 like e2, 12-15 like e3. Half the users
    interact with e0 *and* e1 items, half with e2 and e3 items. Cold items: 16 (reads like e1)
    and 17 (reads like e2), never interacted with."""
    vectors = np.zeros((18, 4))
    for item in range(16):
        vectors[item, item // 4] = 1.0
    vectors[16, 1], vectors[17, 2] = 1.0, 1.0
    rows, cols = [], []
    for user in range(n_users):
        items = range(0, 8) if user % 2 == 0 else range(8, 16)
        rows += [user] * 8
        cols += list(items)
    train = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, 18))
    return train, vectors


def test_solve_satisfies_its_normal_equations():
    rng = np.random.default_rng(0)
    train = sp.random(30, 25, density=0.2, random_state=1, format="csr")
    features = text_cf.item_features(rng.normal(size=(25, 6)))
    model = text_cf.fit(train, features, lam=0.1, alpha=0.5)
    a = text_cf.history_features(train, features, 0.5)
    c, trained = a.T @ a, features[np.diff(train.tocsc().indptr) > 0].astype(np.float64)
    g = trained.T @ trained
    scale = 0.1 * np.linalg.eigvalsh(c).clip(0).mean() * np.linalg.eigvalsh(g).clip(0).mean()
    np.testing.assert_allclose(c @ model.weights @ g + scale * model.weights, c, atol=1e-8 * np.abs(c).max())


def test_history_features_sum_only_the_held_items_and_equal_the_whole_product():
    """Summed over the items the histories hold (no float64 copy of every item's features), the
    history features are exactly those of the whole float64 product, rows without history 0."""
    rng = np.random.default_rng(3)
    keep = np.ones(40)
    keep[5] = 0  # a user without history
    train = (sp.diags(keep) @ sp.random(40, 500, density=0.01, random_state=2, format="csr")).tocsr()
    train.eliminate_zeros()
    features = text_cf.item_features(rng.normal(size=(500, 8)))
    binary = sp.csr_matrix(train, dtype=np.float64, copy=True)
    binary.data[:] = 1.0
    whole = np.asarray(binary @ features.astype(np.float64))
    for alpha in (0.0, 0.5):
        lengths = np.maximum(np.diff(binary.indptr), 1)[:, None] ** alpha
        np.testing.assert_array_equal(text_cf.history_features(train, features, alpha), whole / lengths)
    assert not text_cf.history_features(train, features)[5].any() and whole.any()
    assert text_cf.history_features(train[[5]], features).shape == (1, 9)


def test_learns_co_interaction_that_text_similarity_cannot_see():
    """A user whose history reads only like e0 gets the e1-like cold item first: e0 and e1 are
    orthogonal in text space (raw similarity ties both cold items at 0), but e0 and e1 items are
    interacted with together, which only the interactions teach."""
    train, vectors = _two_tastes()
    features = text_cf.item_features(vectors)
    model = text_cf.fit(train, features, lam=0.01)
    history = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, 18))  # two e0 items
    scores = model.scorer(history, features)(np.array([0]))[0]
    raw = vectors[[0, 1]].sum(axis=0) @ vectors.T
    assert raw[16] == raw[17] == 0.0
    assert scores[16] > scores[17] + 0.1


def test_tune_keeps_the_setting_the_judge_scores_highest():
    train, vectors = _two_tastes()
    features = text_cf.item_features(vectors)
    judged = []

    def judge(model):
        judged.append((model.lam, model.alpha))
        return 1.0 if (model.lam, model.alpha) == (0.1, 1.0) else 0.5

    tuned = text_cf.tune(train, features, judge, lambdas=(0.01, 0.1), alphas=(0.0, 1.0), blends=(0.0,))
    assert (tuned.lam, tuned.alpha, tuned.recall, tuned.blend) == (0.1, 1.0, 1.0, 0.0)
    assert sorted(judged) == [(0.01, 0.0), (0.01, 1.0), (0.1, 0.0), (0.1, 1.0)]


def test_the_blend_spans_textcf_alone_to_the_lm_alone_and_tune_keeps_the_best():
    """Blend 0 is the model itself, 1 the raw text similarity of the history (W = I), between
    them each view weighs its share of the scores' spread; tune judges every blend at the chosen
    setting and keeps the best, so the cold scorer is never below either view alone."""
    train, vectors = _two_tastes()
    features = text_cf.item_features(vectors)
    model = text_cf.fit(train, features, lam=0.01)
    assert text_cf.blended(model, train, features, 0.0) is model
    lm = text_cf.blended(model, train, features, 1.0)
    np.testing.assert_array_equal(lm.weights, np.eye(len(model.weights)))
    history = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, 18))  # two e0 items
    lm_scores = lm.scorer(history, features)(np.array([0]))[0]
    assert lm_scores[16] == lm_scores[17]  # text alone cannot tell the cold items apart
    half = text_cf.blended(model, train, features, 0.5)
    assert half.blend == 0.5 and not np.allclose(half.weights, model.weights)

    def judge(candidate):  # prefers the LM's view: the raw similarity of e0 histories to item 0
        return float(candidate.blend)

    tuned = text_cf.tune(train, features, judge, lambdas=(0.01,), alphas=(0.0,), blends=(0.0, 0.5, 1.0))
    assert (tuned.blend, tuned.recall) == (1.0, 1.0) and tuned.blends == {0.0: 0.0, 0.5: 0.5, 1.0: 1.0}
    served = text_cf.fit_for_serving(train, np.arange(100, 118), features, 0.01, 0.0, "run-1", blend=1.0)
    np.testing.assert_array_equal(served.weights, np.eye(len(model.weights)))


def test_an_lm_view_ranks_the_cold_items_only_where_it_beats_textcf_on_pseudo_cold(tmp_path):
    """The LM views (history profile, interest vectors) compete with TextCF as blended: the best
    pseudo-cold Recall@20 serves, a tie keeps TextCF, and the choice is stored with the model."""
    train, vectors = _two_tastes()
    features = text_cf.item_features(vectors)
    flat = lambda model: 0.4  # noqa: E731 - every TextCF setting alike
    tuned = text_cf.tune(train, features, flat, lambdas=(0.01,), alphas=(0.0,), blends=(0.0,),
                         views={"lm_profile": 0.3, "lm_interest": 0.5})
    assert (tuned.cold_scorer, tuned.recall) == ("lm_interest", 0.5)
    assert tuned.scorers == {"text_cf": 0.4, "lm_profile": 0.3, "lm_interest": 0.5}
    tied = text_cf.tune(train, features, flat, lambdas=(0.01,), alphas=(0.0,), blends=(0.0,), views={"lm_interest": 0.4})
    assert (tied.cold_scorer, tied.recall) == ("text_cf", 0.4)
    assert text_cf.tune(train, features, flat, lambdas=(0.01,), alphas=(0.0,), blends=(0.0,)).cold_scorer == "text_cf"
    model = text_cf.fit_for_serving(train, np.arange(100, 118), features, 0.01, 0.0, "run-1", 0.0, tuned.cold_scorer)
    text_cf.save(model, tmp_path / "m.npz", "enc", tuned)
    assert text_cf.load(tmp_path / "m.npz", "enc").cold_scorer == "lm_interest"
    with pytest.raises(ValueError, match="two_tower"):
        text_cf.fit_for_serving(train, np.arange(100, 118), features, 0.01, 0.0, "run-1", cold_scorer="two_tower")


def test_view_recalls_rank_the_pseudo_cold_items_by_each_users_best_vector():
    """30 pseudo-cold items, each of users 0 and 1 with one relevant: a view whose vector is the
    relevant item's own ranks it first (Recall@20 1), its opposite ranks it last (0); a user
    with several vectors is scored by the best; a user sampled out (row 2) is not judged."""
    rng = np.random.default_rng(0)
    item_vectors = rng.normal(size=(40, 8)).astype(np.float32)
    columns = np.arange(10, 40)
    relevant = sp.csr_matrix(([1.0, 1.0], ([0, 1], [3, 7])), shape=(2, 30))
    split = text_cf.PseudoCold(sp.csr_matrix((3, 40)), np.array([0, 1]), columns, relevant, np.array([5, 6, 9]))
    good = item_vectors[[13, 17]]
    views = {"good": (np.array([5, 6]), good), "bad": (np.array([5, 6]), -good),
             "best_of_two": (np.array([5, 5, 6, 6, 9]), np.vstack([-good[0], good[0], good[1], -good[1], good[0]]))}
    recalls = text_cf.view_user_recalls(split, views, item_vectors)
    assert {name: r.mean() for name, r in recalls.items()} == {"good": 1.0, "bad": 0.0, "best_of_two": 1.0}


def test_the_pseudo_cold_views_are_built_from_the_fit_rows_alone(bundled_split):
    """The views judged on pseudo-cold items come from the pseudo-cold split's fit rows, which
    hold no pseudo-cold item's interaction, and only the sampled pseudo-cold users get one."""
    from recall_pipeline.core.features.user_profiles import ProfileSettings

    items, split = bundled_split
    ids = np.sort(items["item_id"].to_numpy())
    vectors = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def encode(texts):  # a fixed map of the text to a unit vector (the LM's place in this test)
        out = np.array([np.random.default_rng(sum(map(ord, t))).normal(size=16) for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    pseudo = text_cf.pseudo_cold(split, ids)
    assert not np.isin(pseudo.fit_rows["item_id"].to_numpy(), ids[pseudo.columns]).any()
    views = text_cf.pseudo_cold_views(pseudo, items, ids, vectors, "enc", encode, ProfileSettings())
    sampled = set(pseudo.user_ids[pseudo.rows].tolist())
    assert set(views["lm_profile"][0].tolist()) <= sampled and set(views["lm_interest"][0].tolist()) <= sampled
    assert len(set(views["lm_interest"][0].tolist())) > 0.9 * len(sampled)
    recalls = {name: r.mean() for name, r in text_cf.view_user_recalls(pseudo, views, vectors).items()}
    assert set(recalls) == {"lm_profile", "lm_interest"} and all(0 < r < 1 for r in recalls.values())
    nobody = text_cf.PseudoCold(pseudo.matrix, pseudo.rows[:0], pseudo.columns, pseudo.relevant[:0], pseudo.user_ids,
                                pseudo.fit_rows)  # a catalogue too small to hold pseudo-cold users out
    assert text_cf.pseudo_cold_views(nobody, items, ids, vectors, "enc", encode, ProfileSettings()) == {}


def test_the_cold_choice_s_margin_is_a_paired_bootstrap_over_the_next_best_scorer():
    """The lead is over the best other scorer by mean; a lead every user shares has a lower
    bound above 0, one that a few users carry either way has a bound below 0."""
    rng = np.random.default_rng(1)
    base = rng.random(2_000)
    clear = text_cf.cold_margin("text_cf", {"text_cf": base + 0.01, "lm_profile": base, "lm_interest": base - 0.02})
    assert clear.runner_up == "lm_profile" and clear.gain == pytest.approx(0.01) and clear.lower_bound > 0.009
    noisy = np.where(rng.random(2_000) < 0.01, rng.choice([-1.0, 1.0], 2_000), 0.0)  # 20 users, either way
    within = text_cf.cold_margin("lm_profile", {"lm_profile": base + noisy + 0.0005, "text_cf": base})
    assert within.runner_up == "text_cf" and within.lower_bound < 0 < within.gain
    assert "over text_cf (95% lower bound -" in within.describe()
    assert text_cf.cold_margin("text_cf", {"text_cf": base}) is None
    assert text_cf.cold_margin("text_cf", {"text_cf": base, "lm_profile": 0.3}) is None  # a mean, not per user
    assert text_cf.cold_margin("text_cf", {"text_cf": base[:0], "lm_profile": base[:0]}) is None


def test_the_cold_choice_reports_its_lead_measured_on_the_users_it_chose_on(bundled_split, tmp_path):
    """``choose`` on the bundled training part: the margin is over one of the other scorers, and
    the served scorer's per-user figures average to the figure it was chosen by."""
    from recall_pipeline.core.features.user_profiles import ProfileSettings

    items, split = bundled_split
    ids = np.sort(items["item_id"].to_numpy())
    vectors = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def encode(texts):
        out = np.array([np.random.default_rng(sum(map(ord, t))).normal(size=16) for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    tuned, pseudo = text_cf.choose(split, items, ids, vectors, "enc", encode, ProfileSettings())
    others = {"text_cf", "lm_profile", "lm_interest"} - {tuned.cold_scorer}
    figures = tuned.scorers
    assert figures["text_cf"] == tuned.blends[tuned.blend]   # 601 users: the grid's are the compared ones
    assert tuned.margin.runner_up == max(others, key=figures.get)
    assert tuned.margin.gain == pytest.approx(tuned.recall - figures[tuned.margin.runner_up], abs=1e-9)
    assert tuned.margin.lower_bound < tuned.margin.gain
    model = text_cf.fit_for_serving(pseudo.matrix, ids, text_cf.item_features(vectors), tuned.lam, tuned.alpha, "r")
    text_cf.save(model, tmp_path / "m.npz", "enc", tuned)
    with np.load(tmp_path / "m.npz") as stored:
        assert json.loads(str(stored["meta"]))["pseudo_cold_margin"]["runner_up"] == tuned.margin.runner_up


def test_textcf_is_compared_with_the_lm_views_by_its_own_judge_on_their_users():
    """The grid and the blends are judged on one set of users (``judge``), the blended TextCF
    again against the LM views on theirs (``compare``): the comparison, never the grid's figure,
    decides what serves and its lead."""
    train, vectors = _two_tastes()
    features = text_cf.item_features(vectors)
    grid_judge = lambda model: np.array([0.9, 0.9])  # noqa: E731 - TextCF looks best on few users
    compare = lambda model: np.array([0.2, 0.2, 0.2, 0.2])  # noqa: E731 - and is not on more
    views = {"lm_profile": np.array([0.3, 0.3, 0.3, 0.3]), "lm_interest": np.array([0.1, 0.0, 0.1, 0.0])}
    tuned = text_cf.tune(train, features, grid_judge, lambdas=(0.01,), alphas=(0.0,), blends=(0.0,), views=views,
                         compare=compare)
    assert (tuned.cold_scorer, tuned.recall, tuned.blends) == ("lm_profile", 0.3, {0.0: 0.9})
    assert tuned.scorers == pytest.approx({"text_cf": 0.2, "lm_profile": 0.3, "lm_interest": 0.05})
    assert tuned.margin.runner_up == "text_cf" and tuned.margin.gain == pytest.approx(0.1)
    judged_alone = text_cf.tune(train, features, grid_judge, lambdas=(0.01,), alphas=(0.0,), blends=(0.0,),
                                views={name: v[:2] for name, v in views.items()})
    assert judged_alone.cold_scorer == "text_cf"   # without compare the grid's own figure competes


def test_the_grid_is_judged_on_a_seeded_sample_of_the_compared_pseudo_cold_users(bundled_split):
    """``PseudoCold.sampled`` keeps the users within the cap (all of them at the bundled size)
    or a seeded sample of them, each with their own pseudo-cold items."""
    items, split = bundled_split
    ids = np.sort(items["item_id"].to_numpy())
    pseudo = text_cf.pseudo_cold(split, ids)
    assert pseudo.sampled(10**12, len(ids)).rows.tolist() == pseudo.rows.tolist()
    few = pseudo.sampled(50 * len(ids), len(ids))
    assert len(few.rows) == 50 and set(few.rows) < set(pseudo.rows) and np.all(np.diff(few.rows) > 0)
    at = np.searchsorted(pseudo.rows, few.rows)
    assert (few.relevant != pseudo.relevant[at]).nnz == 0
    assert few.rows.tolist() == pseudo.sampled(50 * len(ids), len(ids)).rows.tolist()   # seeded
    assert few.matrix is pseudo.matrix and few.columns is pseudo.columns


def test_stored_model_round_trips_and_refuses_another_encoder(tmp_path):
    train, vectors = _two_tastes()
    features = text_cf.item_features(vectors)
    model = text_cf.fit_for_serving(train, np.arange(100, 118), features, 0.03, 0.5, "run-1")
    assert model.untrained_ids.tolist() == [116, 117]
    path = tmp_path / "text_cf.npz"
    text_cf.save(model, path, "encoder-a")
    loaded = text_cf.load(path, "encoder-a")
    np.testing.assert_array_equal(loaded.weights, model.weights)
    assert (loaded.lam, loaded.alpha, loaded.fit_run, loaded.untrained_ids.tolist()) == (0.03, 0.5, "run-1", [116, 117])
    assert loaded.blend == 0.0
    assert text_cf.load(tmp_path / "missing.npz", "encoder-a") is None
    with pytest.raises(ValueError, match="encoder-a"):
        text_cf.load(path, "encoder-b")
    text_cf.save(text_cf.fit_for_serving(train, np.arange(100, 118), features, 0.03, 0.5, "run-2", 0.25), path, "e")
    assert text_cf.load(path, "e").blend == 0.25


def test_pseudo_cold_judge_is_the_protocols_cold_ranking_of_training_rows(bundled_split):
    """The judge scores only the pseudo-cold columns, and gives what the protocol's own cold
    ranking (``protocol.cold_ranked`` over every item) gives; it never reads the test parts:
    corrupting them changes nothing."""
    import polars as pl

    from recall_pipeline.core.evaluation.metrics import hit_matrix, recall_at_k, relevant_counts
    from recall_pipeline.core.evaluation.protocol import COLD_K, build_evaluation_data, cold_ranked
    from recall_pipeline.core.features.rating_matrix import build_rating_matrix
    from recall_pipeline.core.features.split import pseudo_cold_split

    items, split = bundled_split
    ids = np.sort(items["item_id"].to_numpy())
    vectors = np.random.default_rng(0).normal(size=(len(ids), 16))
    features = text_cf.item_features(vectors)
    fit_matrix, judge = text_cf.pseudo_cold_judge(split, ids, features)
    model = text_cf.fit(fit_matrix, features, 0.03, 0.5)
    pseudo = pseudo_cold_split(split.filter(pl.col("part") == "train"))
    data = build_evaluation_data(pseudo, build_rating_matrix(pseudo, ids))
    lists, _ = cold_ranked(model.scorer(fit_matrix, features), data)
    expected = recall_at_k(hit_matrix(lists, data.cold.relevant), relevant_counts(data.cold.relevant), COLD_K).mean()
    assert judge(model) == pytest.approx(expected, abs=1e-12) and expected > 0
    corrupted = split.with_columns(item_id=pl.when(pl.col("part") != "train").then(pl.col("item_id").shuffle(seed=1))
                                   .otherwise(pl.col("item_id")))
    _, judge_corrupted = text_cf.pseudo_cold_judge(corrupted, ids, features)
    assert judge_corrupted(model) == judge(model)


def test_text_item_ids_are_stored_without_pickle(tmp_path):
    """Text ids (object arrays in the pipeline) round-trip and still match the catalogue's."""
    train, vectors = _two_tastes()
    ids = np.array([f"item-{i}" for i in range(18)], dtype=object)
    model = text_cf.fit_for_serving(train, ids, text_cf.item_features(vectors), 0.03, 0.5, "run-1")
    text_cf.save(model, tmp_path / "m.npz", "enc")
    loaded = text_cf.load(tmp_path / "m.npz", "enc")
    assert np.isin(ids, loaded.untrained_ids).tolist() == [False] * 16 + [True, True]
