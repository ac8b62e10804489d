"""The whole asset graph on a slice of the bundled data, then SQL against the real DuckDB file."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import dagster as dg
import pytest

from recall_pipeline.cli import main as cli_main
from recall_pipeline.core.recall.chosen_settings import load_choice
from recall_pipeline.core.evaluation.evaluation_report import UNBOUNDED
from recall_pipeline.definitions import build_definitions
from recall_pipeline.defs.jobs import feedback_run_config
from recall_pipeline.resources import DataSource
from recall_pipeline.settings import DEFAULT_RETRAIN_MIN_NEW_INTERACTIONS, HOME_ENV, HomeLayout

SAMPLE_USERS = 8
CHECKS = {"raw_items_reconcile", "raw_rows_reconcile", "embeddings_finite_unit_norm_one_per_item",
          "index_matches_embeddings", "two_tower_index_matches_model",
          "every_user_has_candidates", "no_training_item_recalled", "metrics_within_unit_interval",
          "ease_model_fits_catalogue", "freshness_check", "lists_no_worse_than_published"}


def run_job(home: HomeLayout, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions(home, DataSource(sample_users=SAMPLE_USERS)).resolve_job_def("recall_job")
    return job.execute_in_process(instance=instance)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Two runs of the job into one temporary home: the second must reuse every embedding."""
    home = HomeLayout(tmp_path_factory.mktemp("home")).create()
    with dg.instance_for_test() as instance:
        first = run_job(home, instance)
        second = run_job(home, instance)
    return home, first, second


def sql(home: HomeLayout, query: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset) or [
        m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == asset]
    event = events[0]
    metadata = getattr(event, "metadata", None) or event.materialization.metadata
    return {key: value.value for key, value in metadata.items()}


def test_runs_succeed_and_every_check_passes(pipeline):
    _, first, second = pipeline
    for result in (first, second):
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == CHECKS
        assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    # the quality gate: nothing to compare before the first publication; then the same cut
    gates = [next(e for e in r.get_asset_check_evaluations() if e.check_name == "lists_no_worse_than_published")
             for r in (first, second)]
    assert gates[0].metadata["basis"].value == "no published version yet"
    assert gates[1].metadata["basis"].value.startswith("same cut") and gates[1].metadata["users"].value > 0


def test_raw_rows_reconcile_and_nothing_is_quarantined(pipeline):
    home, *_ = pipeline
    [(raw, clean, quarantined)] = sql(home, "select (select count(*) from raw.interactions), "
                                            "(select count(*) from clean.interactions), "
                                            "(select count(*) from quarantine.interactions)")
    assert raw == clean + quarantined and quarantined == 0
    [(users,)] = sql(home, "select count(distinct user_id) from raw.interactions")
    assert users == SAMPLE_USERS


def test_split_table_follows_the_contract(pipeline):
    home, *_ = pipeline
    parts = dict(sql(home, "select part, count(*) from features.interactions_split group by part"))
    assert set(parts) == {"train", "warm_test", "cold_test"}
    [(total,)] = sql(home, "select count(*) from clean.interactions")
    assert sum(parts.values()) == total
    columns = [row[0] for row in sql(home, "describe features.interactions_split")]
    assert columns[:5] == ["user_id", "item_id", "rating", "timestamp", "part"]


def test_every_user_has_k_candidates_and_none_from_training(pipeline):
    home, *_ = pipeline
    counts = sql(home, "select user_id, count(*), min(rank), max(rank) from recall.latest group by user_id")
    assert len(counts) == SAMPLE_USERS
    assert all((n, low, high) == (100, 1, 100) for _, n, low, high in counts)
    [(leaks,)] = sql(home, """select count(*) from recall.latest c join features.interactions_split s
                               on s.user_id = c.user_id and s.item_id = c.item_id and s.part = 'train'""")
    assert leaks == 0
    # the default MMR lambda (1.0, chosen on validation) keeps the fused order: each list opens
    # with the user's highest fused score and the stored score never rises down a list (MMR's
    # re-ranking at lower lambdas is tested in test_candidates); no item is listed twice
    [(not_top_first, rises, repeats)] = sql(home, """select
        (select count(*) from (select max(score) as top, max(score) filter (where rank = 1) as first
                               from recall.latest group by user_id) where first < top - 1e-7),
        (select count(*) from (select score, lag(score) over (partition by user_id order by rank) as above
                               from recall.latest) where score > above + 1e-7),
        (select count(*) - count(distinct (user_id, item_id)) from recall.latest)""")
    assert (not_top_first, rises, repeats) == (0, 0, 0)
    [(n_scores,)] = sql(home, "select count(distinct score) from recall.latest")
    assert n_scores >= 100  # fused scores, not a constant (one route alone: its 100 rank scores)
    [(lowest, highest)] = sql(home, "select min(score), max(score) from recall.latest")
    assert lowest < highest  # the scores are not all equal (which would make the first check vacuous)
    # the text_cf route proposes only items nobody had interacted with in training
    [(warm,)] = sql(home, """select count(*) from recall.latest where rank_text_cf is not null and item_id in
        (select item_id from features.interactions_split where part = 'train')""")
    assert warm == 0


def test_runs_append_and_latest_view_shows_the_newest(pipeline):
    home, first, second = pipeline
    runs = dict(sql(home, "select run_id, count(*) from recall.candidates group by run_id"))
    assert runs == {first.run_id: SAMPLE_USERS * 100, second.run_id: SAMPLE_USERS * 100}
    assert sql(home, "select distinct run_id from recall.latest") == [(second.run_id,)]


def test_metrics_are_stored_in_range_with_stable_names(pipeline):
    home, first, second = pipeline
    rows = sql(home, "select model, slice, metric, k, value from eval.metrics where run_id = ?", [second.run_id])
    keys = {(m, s, metric, k) for m, s, metric, k, _ in rows}
    expected_warm = {("recall", 20), ("recall", 50), ("recall", 100), ("ndcg", 10), ("ndcg", 50),
                     ("coverage", 50), ("long_tail", 50), ("novelty", 50), ("diversity", 10)}
    for model in ("final", "route:two_tower", "route:lm_profile", "route:lm_interest", "route:ease", "route:text_cf",
                  "MostPopular", "ItemKNN", "EASE"):
        assert {(model, "warm", m, k) for m, k in expected_warm} <= keys
        assert {(model, "cold", "recall", 20), (model, "cold", "ndcg", 20)} <= keys
    assert all(0.0 <= value <= 1.0 for m, s, metric, k, value in rows if metric not in UNBOUNDED)
    # how many users each slice's figures rest on: the whole slices here (no sample at this size)
    users = {metric: value for m, s, metric, k, value in rows if (m, s) == ("data", "users")}
    warm_users = sql(home, "select count(distinct user_id) from features.interactions_split "
                           "where part = 'warm_test' and is_relevant")[0][0]
    cold_users = sql(home, "select count(distinct user_id) from features.interactions_split "
                           "where part = 'cold_test' and is_relevant")[0][0]
    assert users["warm_scored"] == users["warm_in_slice"] == warm_users > 0
    assert users["cold_scored"] == users["cold_in_slice"] == cold_users > 0
    assert users["sparse_scored"] == users["sparse_in_slice"] <= warm_users
    assert all(value > 0 for m, s, metric, k, value in rows if metric == "novelty")
    by_key = {(m, s, metric, k): v for m, s, metric, k, v in rows}
    for route in ("two_tower", "lm_profile", "lm_interest", "ease", "text_cf"):  # each route alone, on the same split
        assert (f"route:{route}", "warm", "recall", 50) in by_key
    # final ranks the cold items with the text_cf route's model
    assert by_key[("final", "cold", "recall", 20)] == by_key[("route:text_cf", "cold", "recall", 20)]
    # the same data and model give the same figures in both runs
    before = dict(((m, s, metric, k), v) for m, s, metric, k, v in
                  sql(home, "select model, slice, metric, k, value from eval.metrics where run_id = ?",
                      [first.run_id]))
    assert before == {(m, s, metric, k): v for m, s, metric, k, v in rows}


def protocol_figures(home: HomeLayout, run_id: str) -> dict[tuple[str, str, int], float]:
    """``final``'s warm and sparse figures recomputed in plain Python from the warehouse tables
    as docs/EVALUATION.md defines them: the run's lists from recall.candidates, relevance
    (rating >= 4.0 on a warm test row), training counts and the catalogue from the split and
    clean.items. Keys: (slice, metric, k)."""
    relevant: dict[int, set[int]] = {}
    for user, item in sql(home, "select user_id, item_id from features.interactions_split "
                                "where part = 'warm_test' and rating >= 4.0"):
        relevant.setdefault(user, set()).add(item)
    train_rows = dict(sql(home, "select user_id, count(*) from features.interactions_split "
                                "where part = 'train' group by user_id"))
    item_users = dict(sql(home, "select item_id, count(distinct user_id) from features.interactions_split "
                                "where part = 'train' group by item_id"))
    [(n_users,)] = sql(home, "select count(distinct user_id) from features.interactions_split")
    [(n_catalogue,)] = sql(home, "select count(*) from clean.items")
    lists: dict[int, list[int]] = {}
    for user, item in sql(home, "select user_id, item_id from recall.candidates where run_id = ? "
                                "order by user_id, rank", [run_id]):
        lists.setdefault(user, []).append(item)
    genres = {item: set(names or []) for item, names in sql(home, "select item_id, genres from clean.items")}
    by_popularity = sorted(item_users, key=lambda item: (-item_users[item], item))
    head = set(by_popularity[:int(0.2 * len(by_popularity))])

    def figures(users: list[int]) -> dict[tuple[str, int], float]:
        out = {}
        for k in (20, 50, 100):
            out["recall", k] = sum(len(set(lists[u][:k]) & relevant[u]) / min(k, len(relevant[u]))
                                   for u in users) / len(users)
        for k in (10, 50):
            out["ndcg", k] = sum(
                sum(1 / math.log2(rank + 1) for rank, item in enumerate(lists[u][:k], 1) if item in relevant[u])
                / sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant[u])) + 1))
                for u in users) / len(users)
        out["coverage", 50] = len({item for u in users for item in lists[u][:50]}) / n_catalogue
        out["long_tail", 50] = sum(sum(item not in head for item in lists[u][:50]) / len(lists[u][:50])
                                   for u in users) / len(users)
        out["novelty", 50] = sum(sum(-math.log2((item_users.get(item, 0) + 1) / (n_users + 1)) for item in lists[u][:50])
                                 / len(lists[u][:50]) for u in users) / len(users)
        out["diversity", 10] = sum(statistics.mean(jaccard_distance(genres[a], genres[b])
                                                   for a, b in itertools.combinations(lists[u][:10], 2))
                                   for u in users) / len(users)
        return out

    warm = sorted(relevant)
    sparse = [u for u in warm if train_rows.get(u, 0) <= 30]
    return {(name, metric, k): value for name, users in (("warm", warm), ("sparse", sparse)) if users
            for (metric, k), value in figures(users).items()}


def jaccard_distance(a: set, b: set) -> float:
    """1 - |a & b| / |a | b|; two empty genre sets are at distance 0."""
    return 1 - len(a & b) / len(a | b) if a | b else 0.0


def test_final_figures_recompute_from_the_tables(pipeline):
    """Every figure of ``final`` on the warm and sparse slices equals its recomputation from
    the stored lists, the split and the catalogue."""
    home, _, second = pipeline
    recomputed = protocol_figures(home, second.run_id)
    stored = {(s, metric, k): v for s, metric, k, v in sql(
        home, "select slice, metric, k, value from eval.metrics where run_id = ? and model = 'final' "
              "and slice in ('warm', 'sparse')", [second.run_id])}
    assert ("warm", "recall", 50) in recomputed  # sparse too when the sample has a sparse user
    assert set(stored) == set(recomputed)
    assert {key: pytest.approx(value, abs=1e-9) for key, value in recomputed.items()} == stored
    assert 0 < recomputed["warm", "recall", 100] < 1  # neither vacuous nor trivially perfect
    # the figures score the lists of this run, not another's
    assert sql(home, "select distinct candidates_run_id from eval.metrics where run_id = ?",
               [second.run_id]) == [(second.run_id,)]


COLD_FIGURES_SQL = """
with relevant as (
    select distinct user_id, item_id from features.interactions_split where part = 'cold_test' and is_relevant
), counts as (
    select user_id, count(*) as n_relevant from relevant group by user_id
), hits as (
    select c.user_id, count(*) as n_hits, sum(1 / log2(c.rank + 1)) as dcg
    from eval.cold_rankings c join relevant r on r.user_id = c.user_id and r.item_id = c.item_id
    where c.run_id = ? and c.rank <= 20 group by c.user_id
), ideal as (
    select i as n, sum(1 / log2(i + 1)) over (order by i) as idcg from range(1, 21) t(i)
)
select count(*), avg(coalesce(h.n_hits, 0) / least(20, n.n_relevant)), avg(coalesce(h.dcg, 0) / i.idcg)
from counts n left join hits h using (user_id) join ideal i on i.n = least(20, n.n_relevant)
"""


def test_cold_figures_recompute_from_the_stored_cold_ranking(pipeline):
    """eval.cold_rankings holds the ranking final's cold figures score: Recall@20 and NDCG@20
    recomputed in SQL from it and the split equal eval.metrics."""
    home, _, second = pipeline
    [(users, recall, ndcg)] = sql(home, COLD_FIGURES_SQL, [second.run_id])
    stored = dict(sql(home, "select metric, value from eval.metrics where run_id = ? and model = 'final' "
                            "and slice = 'cold' and k = 20", [second.run_id]))
    assert users > 0 and recall > 0
    assert recall == pytest.approx(stored["recall"], abs=1e-9) and ndcg == pytest.approx(stored["ndcg"], abs=1e-9)
    [(ranked_users, rows, min_rank, max_rank, excluded)] = sql(home, """
        select count(distinct user_id), count(*), min(rank), max(rank),
               (select max(test_rows_excluded) from eval.metrics where run_id = ?)
        from eval.cold_rankings where run_id = ?""", [second.run_id, second.run_id])
    [(cold_items,)] = sql(home, "select count(distinct item_id) from features.interactions_split where part = 'cold_test'")
    assert ranked_users == users and (min_rank, max_rank) == (1, min(20, cold_items)) and excluded == 0
    assert rows == users * min(20, cold_items)
    # the ranked items are cold items, ordered by score
    [(not_cold, rises)] = sql(home, """select
        (select count(*) from eval.cold_rankings c where run_id = ? and c.item_id not in
            (select item_id from features.item_sides where is_cold)),
        (select count(*) from (select score, lag(score) over (partition by user_id order by rank) as above
                               from eval.cold_rankings where run_id = ?) where score > above)""",
                                [second.run_id, second.run_id])
    assert (not_cold, rises) == (0, 0)


def test_final_is_compared_with_every_model_user_by_user(pipeline):
    """eval.comparisons: final against every route and baseline of the run on warm Recall@50,
    warm NDCG@10 and cold Recall@20; each gain is final's figure less the other's in
    eval.metrics, inside its interval, over the slice's scored users."""
    home, _, second = pipeline
    rows = sql(home, """
        select c.against, c.slice, c.gain, f.value - o.value, c.lower, c.upper, c.users, u.value
        from eval.comparisons c
        join eval.metrics f on f.run_id = c.run_id and f.model = c.model and f.slice = c.slice
                           and f.metric = c.metric and f.k = c.k
        join eval.metrics o on o.run_id = c.run_id and o.model = c.against and o.slice = c.slice
                           and o.metric = c.metric and o.k = c.k
        join eval.metrics u on u.run_id = c.run_id and u.model = 'data' and u.slice = 'users'
                           and u.metric = c.slice || '_scored'
        where c.run_id = ? and c.model = 'final'""", [second.run_id])
    [(others,)] = sql(home, "select count(distinct model) - 1 from eval.metrics where run_id = ? and slice = 'warm'",
                      [second.run_id])
    assert len(rows) == 3 * others and {r[0] for r in rows} >= {"EASE", "route:ease", "route:two_tower"}
    for against, slice_, gain, difference, lower, upper, users, scored in rows:
        assert gain == pytest.approx(difference, abs=1e-9) and lower <= gain <= upper, (against, slice_)
        assert users == scored > 0


def test_second_run_reuses_every_embedding(pipeline):
    home, first, second = pipeline
    [(items,)] = sql(home, "select count(*) from clean.items")
    assert materialization(first, "item_embeddings")["encoded"] == items
    assert materialization(second, "item_embeddings")["encoded"] == 0
    assert materialization(second, "item_embeddings")["reused"] == items


def test_second_run_encodes_no_interest_sentence_again(pipeline):
    """The same data: every stage that encodes users' sentences finds them all kept."""
    home, first, second = pipeline
    [(distinct,)] = sql(home, "select count(distinct profile_text) from features.user_profiles")
    assert materialization(first, "user_profiles")["interest_sentences"] == f"{distinct} interest sentences encoded, 0 reused"
    assert materialization(second, "user_profiles")["interest_sentences"] == f"0 interest sentences encoded, {distinct} reused"
    for stage in ("text_cf_model", "route_settings"):
        encoded = int(materialization(first, stage)["interest_sentences"].split()[0])
        assert encoded > 0
        assert materialization(second, stage)["interest_sentences"].startswith("0 interest sentences encoded")
    kept = pl.read_parquet(home.sentence_vectors / "user_profiles.parquet")
    stored = pl.DataFrame(sql(home, "select profile_text, interest_embedding from features.user_profiles"),
                          schema=["text", "stored"], orient="row")
    both = kept.join(stored, on="text")
    assert kept.height == distinct and both.height == stored.height
    np.testing.assert_array_equal(np.vstack(both["embedding"].to_list()), np.vstack(both["stored"].to_list()))


def test_index_manifest_matches_the_catalogue(pipeline):
    home, *_ = pipeline

    manifest = json.loads((home.indexes / "items" / "manifest.json").read_text())
    [(items,)] = sql(home, "select count(*) from clean.items")
    assert (manifest["count"], manifest["dims"], manifest["index_type"]) == (items, 384, "flat")
    assert manifest["model"].startswith("all-MiniLM-L6-v2@")


def test_cli_queries_the_results(pipeline, monkeypatch, capsys):
    home, *_ = pipeline
    monkeypatch.setenv(HOME_ENV, str(home.root))
    assert cli_main(["recall", "1", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].lstrip().startswith("1 ") and "Genres:" in "".join(lines)
    # each line names every route that proposed the item, at its rank in that route's list
    names = ("two_tower", "lm_profile", "lm_interest", "ease", "popularity", "text_cf")
    ranks = sql(home, f"select {', '.join(f'rank_{n}' for n in names)} from recall.latest "
                      "where user_id = 1 order by rank limit 3")
    for line, row in zip(lines, ranks):
        assert line.endswith("[" + ",".join(f"{n}#{at}" for n, at in zip(names, row) if at) + "]")
    assert cli_main(["sql", "select count(*) as n from recall.latest"]) == 0
    assert str(SAMPLE_USERS * 100) in capsys.readouterr().out
    # the read copy: catalog.items is there, clean.items (a warehouse table) is not
    assert cli_main(["sql", "--published", "select count(*) as n from catalog.items"]) == 0
    [(items,)] = sql(home, "select count(*) from clean.items")
    assert str(items) in capsys.readouterr().out
    assert cli_main(["sql", "--published", "select count(*) from clean.items"]) == 1
    assert str(home.published) in capsys.readouterr().err
    assert cli_main(["recall", "999999"]) == 1


def test_cli_recalls_for_a_new_user_given_as_items(pipeline, monkeypatch, capsys):
    home, *_ = pipeline
    monkeypatch.setenv(HOME_ENV, str(home.root))
    liked = [str(i) for (i,) in sql(home, "select item_id from clean.items order by item_id limit 3")]
    assert cli_main(["recall", "--items", ",".join(liked), "-k", "5"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert "recall_two_tower/v2" in header and len(lines) == 5  # the champion's stored copy
    saved = json.loads((home.two_tower_serving.current() / "model" / "config.json").read_text())
    assert f"two-tower trust {saved['two_tower_trust']:g};" in header  # the trust v2 was saved with
    recalled = [line.split()[2] for line in lines]
    routes = [line.rsplit("[", 1)[1] for line in lines]
    assert not set(recalled) & set(liked) and all("two_tower#" in r or "ease#" in r for r in routes)
    # the stored EASE model of the last full refresh votes where the choice weighs the route
    weights = load_choice(home.route_settings).settings.weights
    assert any("ease#" in r for r in routes) == (weights["ease"] > 0)
    assert cli_main(["recall", "--items", ",".join(liked), "-k", "5", "--model-version", "1"]) == 0
    header_v1, *lines_v1 = capsys.readouterr().out.strip().splitlines()
    # v1 is downloaded from MLflow; trained on the same data with the same seed, it ranks alike
    assert "recall_two_tower/v1" in header_v1 and [l.split()[2] for l in lines_v1] == recalled
    assert cli_main(["recall", "--items", liked[0], "--model-version", "9"]) == 1
    assert "no version or alias '9'" in capsys.readouterr().err
    assert cli_main(["recall", "--items", "not-an-item"]) == 1


def test_report_files_hold_the_stored_numbers(pipeline):
    home, _, second = pipeline
    report = (home.reports / f"evaluation_{second.run_id}.html").read_text()
    assert (home.reports / "latest.html").read_text() == report
    assert report.count("data:image/png;base64,") == 4
    [(ease_recall,)] = sql(home, "select value from eval.metrics where run_id = ? and model = 'EASE' "
                                 "and slice = 'warm' and metric = 'recall' and k = 50", [second.run_id])
    assert f"<td>{ease_recall:.4f}</td>" in report
    assert materialization(second, "evaluation_report")["EASE/warm/recall@50"] == round(ease_recall, 4)


def test_mlflow_holds_the_evaluation_run(pipeline):
    import mlflow

    home, _, second = pipeline
    run_id = materialization(second, "evaluation_report")["mlflow_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{home.mlflow_db}")
    run = client.get_run(run_id)
    assert run.data.tags["dagster_run_id"] == second.run_id
    assert run.info.status == "FINISHED"
    [(final_recall,)] = sql(home, "select value from eval.metrics where run_id = ? and model = 'final' "
                                  "and slice = 'warm' and metric = 'recall' and k = 50", [second.run_id])
    assert run.data.metrics["final.warm.recall_at_50"] == pytest.approx(final_recall)
    assert [a.path for a in client.list_artifacts(run_id)] == [f"evaluation_{second.run_id}.html"]


def test_mlflow_holds_the_model_runs_versions_and_champion(pipeline):
    """Each run trained and registered a version; the equal second one took the alias."""
    import mlflow

    from recall_pipeline.core.training import model_registry

    home, first, second = pipeline
    trained = [materialization(run, "recall_model") for run in (first, second)]
    assert [t["version"] for t in trained] == ["1", "2"] and all(t["retrained"] for t in trained)
    assert trained[0]["decision"] == "v1 is the first version: champion"
    # seeded CPU training on the same data gives the same model, so v2 ties v1 on the same
    # validation cut (the test split is never read) and is promoted
    assert [t["judged_on"] for t in trained] == ["first version", "same validation cut"]
    assert trained[1]["judged_recall@50"] == trained[1]["champion_judged_recall@50"] == trained[0]["judged_recall@50"]
    assert trained[1]["promoted"] and "validation Recall@50" in trained[1]["decision"]
    client = mlflow.MlflowClient(f"sqlite:///{home.mlflow_db}")
    assert client.get_model_version_by_alias(model_registry.MODEL_NAME, "champion").version in (2, "2")
    run = client.get_run(trained[1]["mlflow_run_id"])
    assert run.data.tags["dagster_run_id"] == second.run_id and run.info.status == "FINISHED"
    [(train_rows,)] = sql(home, "select count(*) from features.interactions_split where part = 'train'")
    assert run.data.params["train_rows"] == str(train_rows) and len(run.data.params["train_sha256"]) == 64
    epochs = client.get_metric_history(run.info.run_id, "validation_recall_at_50")
    assert [m.step for m in epochs] == list(range(1, len(epochs) + 1))
    assert max(m.value for m in epochs) == pytest.approx(trained[1]["validation_recall@50"], abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/config.json", "model/item_ids.npy", "model/model.safetensors",
                         "model/training_pairs.npz", "model/validation_lists.npz"}
    assert sql(home, "select version, promoted, champion_after, judged_on from models.versions order by version") == [
        ("1", True, "1", "first version"), ("2", True, "2", "same validation cut")]
    [(holdout_users,)] = sql(home, "select count(distinct user_id) from features.interactions_split "
                                   "where val_part = 'holdout' and is_relevant")
    assert sql(home, "select judged_users from models.versions where version = '2'") == [(holdout_users,)]
    tags = client.get_model_version(model_registry.MODEL_NAME, "2").tags
    assert (tags["judged_on"], tags["validation_sha256"]) == ("same validation cut", run.data.params["validation_sha256"])
    assert sql(home, "select distinct split_part(model_version, '+', 1) from recall.latest") == [
        ("recall_two_tower/v2",)]
    # the serving version's lists are in the published lists whenever the run's fusion gives it a say
    [(settings,)] = sql(home, "select route_settings from recall.refreshes where run_id = ?", [second.run_id])
    voted = sql(home, "select count(*) from recall.latest where rank_two_tower is not null")[0][0]
    assert (voted > 0) == (json.loads(settings)["weights"]["two_tower"] > 0)


def test_evaluation_report_alone_evaluates_the_published_lists(pipeline):
    home, _, second = pipeline
    job = build_definitions(home, DataSource(sample_users=SAMPLE_USERS)).resolve_job_def("recall_job")
    with dg.instance_for_test() as instance:
        alone = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("evaluation_report")],
                                       run_config={"ops": {"evaluation_report": {"config": {"baselines": False}}}})
    assert alone.success
    rows = sql(home, "select distinct candidates_run_id, model from eval.metrics where run_id = ?", [alone.run_id])
    assert {r[0] for r in rows} == {second.run_id}
    assert {r[1] for r in rows} == {"final", "route:two_tower", "route:lm_profile", "route:lm_interest",
                                    "route:ease", "route:text_cf", "data"}  # no baselines; "data": the quarantine counts


def test_two_tower_index_serves_any_version_by_config(pipeline):

    home, *_ = pipeline
    job = build_definitions(home, DataSource(sample_users=SAMPLE_USERS)).resolve_job_def("recall_job")
    built = []

    def build(version: str) -> dict:
        with dg.instance_for_test() as instance:
            result = job.execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey("two_tower_index")],
                run_config={"ops": {"two_tower_index": {"config": {"model_version": version}}}})
        assert result.success
        built.append(materialization(result, "two_tower_index"))
        folder = home.two_tower_serving.current()  # one folder: the model and its index
        manifest = json.loads((folder / "manifest.json").read_text())
        assert built[-1]["path"] == str(folder) and built[-1]["model_version"] == manifest["model"]
        assert folder.name == f"{manifest['model'].split('/')[-1]}-{result.run_id[:8]}"
        assert (folder / "model" / "config.json").exists() and (folder / "items.faiss").exists()
        return manifest

    assert build("1")["model"] == "recall_two_tower/v1"
    [(items,)] = sql(home, "select count(*) from clean.items")
    assert build("champion")["model"] == "recall_two_tower/v2" and build("champion")["count"] == items
    # each publish keeps the version it replaced and removes the older ones
    assert built[1]["previous"] == built[0]["path"] and built[2]["previous"] == built[1]["path"]
    assert built[2]["removed_superseded"] == f"versions/{Path(built[0]['path']).name}/"
    assert sorted(p.name for p in home.two_tower_versions.iterdir()) == sorted(
        Path(b["path"]).name for b in built[1:])
    with dg.instance_for_test() as instance, pytest.raises(LookupError, match="no version or alias '42'"):
        job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("two_tower_index")],
                               run_config={"ops": {"two_tower_index": {"config": {"model_version": "42"}}}})
    assert home.two_tower_serving.current() == Path(built[2]["path"])  # a failed build changes nothing


def test_a_home_in_the_flat_layout_is_migrated_by_the_next_materialization(pipeline, monkeypatch, capsys):
    """A home of an earlier release (model/, items.faiss and manifest.json directly in
    indexes/two_tower/): readers say to materialize two_tower_index, the CLI serves from MLflow,
    and the next materialization publishes the versioned layout and removes the flat files."""
    import shutil

    home, *_ = pipeline
    root, current = home.two_tower_index, home.two_tower_serving.current()
    for name in ("model", "items.faiss", "manifest.json"):
        (current / name).rename(root / name)
    shutil.rmtree(home.two_tower_versions)
    home.two_tower_pointer.unlink()
    job = build_definitions(home, DataSource(sample_users=SAMPLE_USERS)).resolve_job_def("recall_job")
    with dg.instance_for_test() as instance:
        refused = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("recall_candidates")],
                                         raise_on_error=False)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.cause.message  # the step's own error
    assert f"{root} still has the flat layout of an earlier version (items.faiss, manifest.json, model/)" in message
    assert "materialize two_tower_index to publish one in the versioned layout" in message

    monkeypatch.setenv(HOME_ENV, str(home.root))
    liked = [str(i) for (i,) in sql(home, "select item_id from clean.items order by item_id limit 3")]
    assert cli_main(["recall", "--items", ",".join(liked), "-k", "3"]) == 0
    assert "still has the flat layout" in capsys.readouterr().err  # and serves from MLflow meanwhile

    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("two_tower_index")])
    assert result.success
    metadata = materialization(result, "two_tower_index")
    assert metadata["removed_flat_layout"] == "items.faiss, manifest.json, model/"
    assert metadata["previous"] == "none" and metadata["model_version"] == "recall_two_tower/v2"
    assert sorted(p.name for p in root.iterdir()) == [".CURRENT.lock", "CURRENT", "versions"]
    assert home.two_tower_serving.current() == Path(metadata["path"])


READER = r"""
import json, sys, time, duckdb
path, stop, out = sys.argv[1:4]
queries, failures, torn = 0, [], 0
import os
while not os.path.exists(stop):
    try:
        with duckdb.connect(path, read_only=True) as con:
            n, runs, users = con.execute(
                "select count(*), count(distinct run_id), count(distinct user_id) from recall.latest").fetchall()[0]
            if runs != 1 or n != users * 100:
                torn += 1
        queries += 1
    except Exception as exc:
        failures.append(repr(exc))
    time.sleep(0.05)  # a user querying again and again, not a core spinning beside the run
json.dump({"queries": queries, "failures": failures, "torn": torn}, open(out, "w"))
"""


def test_feedback_refresh_while_users_query_the_published_copy(pipeline, tmp_path):
    """Feedback flows in through the inbox while another process keeps querying."""
    import subprocess
    import sys

    home, *_ = pipeline
    before = sql_published(home, "select item_id from recall.latest where user_id = 1 order by rank")
    [(n_raw,)] = sql(home, "select count(*) from raw.interactions")
    unseen = [i for (i,) in sql(home, "select item_id from clean.items order by item_id")
              if (i,) not in sql(home, "select item_id from features.interactions_split where user_id = 1")][:30]
    lines = [f"1,{item},5,2016-12-{1 + n % 28:02d}T10:00:00" for n, item in enumerate(unseen)]
    # user 2 reports 10 ratings from long ago: their last fifth grows into interactions that
    # were training rows when the champion trained (it is not retrained for 40 interactions)
    seen_by_2 = {i for (i,) in sql(home, "select item_id from features.interactions_split where user_id = 2")}
    old = [i for (i,) in sql(home, "select item_id from clean.items order by item_id desc limit 50")
           if i not in seen_by_2][:10]
    lines += [f"2,{item},4,1996-01-{1 + n:02d}T10:00:00" for n, item in enumerate(old)]
    feedback_file = home.inbox / "user1.csv"
    feedback_file.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(lines) + "\n")

    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(home.published), str(stop), str(out)])
    job = build_definitions(home, DataSource(sample_users=SAMPLE_USERS), feedback_evaluation="run").resolve_job_def(
        "feedback_refresh_job")
    config = feedback_run_config([str(feedback_file)])
    try:
        with dg.instance_for_test() as instance:
            first = job.execute_in_process(instance=instance, run_config=config)
            # the same content dropped again is recognised and not ingested twice
            (home.inbox / "again.csv").write_text((home.inbox / "archive" / "user1.csv").read_text())
            second = job.execute_in_process(instance=instance)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert first.success and second.success
    assert materialization(first, "feedback_events")["ingested"] == 1
    assert materialization(second, "feedback_events")["already_ingested"] == 1
    # 30 new interactions are below the retraining threshold: the champion keeps serving
    assert len(lines) < DEFAULT_RETRAIN_MIN_NEW_INTERACTIONS
    assert materialization(first, "recall_model")["retrained"] is False
    assert "not retrained" in materialization(first, "recall_model")["reason"]
    [(n_after,)] = sql(home, "select count(*) from raw.interactions")
    assert n_after == n_raw + len(lines)
    assert sql(home, "select count(*), min(batch_id) from raw.interactions where source_kind = 'feedback'") == [
        (len(lines), f"feedback-{content_hash_of(home.inbox / 'archive' / 'user1.csv')[:16]}")]
    assert (home.inbox / "archive" / "user1.csv").exists() and not feedback_file.exists()
    assert (home.inbox / "duplicates" / "again.csv").exists()
    after = sql_published(home, "select item_id from recall.latest where user_id = 1 order by rank")
    assert after != before  # the affected user's candidates changed
    # the split moved under the champion (v2, not retrained): the test rows it trained on are
    # left out of every figure of that evaluation, and the count says so
    import numpy as np
    import polars as pl

    from recall_pipeline.core.training import model_registry

    serving = materialization(first, "recall_model")["champion"]
    folder = model_registry.download(f"sqlite:///{home.mlflow_db}", serving, tmp_path / "serving")
    with np.load(folder / "training_pairs.npz") as stored:
        trained_pairs = set(zip(stored["user_id"].tolist(), stored["item_id"].tolist()))
    split = pl.DataFrame(sql(home, "select user_id, item_id, part from features.interactions_split"),
                         schema=["user_id", "item_id", "part"], orient="row")
    train_now = set(split.filter(pl.col("part") == "train").select("user_id", "item_id").iter_rows())
    moved = [r for r in split.filter(pl.col("part") != "train").iter_rows()
             if (r[0], r[1]) in trained_pairs and (r[0], r[1]) not in train_now]
    assert moved and {r[0] for r in moved} == {2}
    assert sql(home, "select distinct test_rows_excluded from eval.metrics where run_id = ?", [first.run_id]) == [
        (len(moved),)]
    assert materialization(first, "evaluation_report")["test_rows_excluded"] == len(moved)
    # the second refresh (no threshold: it retrains) judged the new version on the current
    # holdout less what the champion trained on, and its evaluation excluded nothing
    retrained = materialization(second, "recall_model")
    assert retrained["retrained"] and retrained["judged_on"] == "current holdout less champion training pairs"
    assert sql(home, "select distinct test_rows_excluded from eval.metrics where run_id = ?", [second.run_id]) == [
        (0 if retrained["promoted"] else len(moved),)]
    [(published_cold,)] = sql_published(home, "select count(*) from eval.cold_rankings")
    assert published_cold == sql(home, "select count(*) from eval.cold_rankings")[0][0] > 0
    report = json.loads(out.read_text())
    assert report["failures"] == [] and report["torn"] == 0
    assert report["queries"] > 10


def sql_published(home: HomeLayout, query: str) -> list[tuple]:
    with duckdb.connect(str(home.published), read_only=True) as con:
        return con.execute(query).fetchall()


def content_hash_of(path) -> str:
    from recall_pipeline.core.ingest.feedback import content_hash

    return content_hash(path)
