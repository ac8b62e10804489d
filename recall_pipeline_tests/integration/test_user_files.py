"""The whole graph on the user's own files: column mapping, quarantine, text ids, clear errors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from recall_pipeline.definitions import build_definitions
from recall_pipeline.resources import data_source_from_env
from recall_pipeline.resources import DataSource
from recall_pipeline.settings import HOME_ENV, SOURCE_ENV, HomeLayout

ITEMS = """sku,name,tags,blurb
m1,"Alien",horror;sci-fi,A crew meets a <b>deadly</b> creature.
m2,"Heat",crime;thriller,Cops and robbers in L.A.
m3,"Matrix, The",action;sci-fi,A hacker learns the truth.
m4,"Toy Story",animation;children,Toys come alive.
m5,"Up",animation;adventure,A house flies away.
m6,"Aliens",action;horror;sci-fi,The marines go back.
m3,"",action,
"""

EVENTS = ["who,what,stars,when"]
for user in ("ann", "bob", "cy"):
    for day, item in enumerate(("m1", "m2", "m3", "m4", "m5", "m6")):
        if (user, item) not in {("ann", "m4"), ("bob", "m1")}:
            EVENTS.append(f"{user},{item},{4 + (day % 2)},2020-01-0{day + 1}T10:00:00")
EVENTS += [
    "ann,m9,4,2020-01-02T10:00:00",      # unknown item
    "bob,m2,7,2020-01-03T10:00:00",      # rating out of range
    ",m2,4,2020-01-03T10:00:00",         # no user
    "cy,m1,4,not-a-date",                # unparseable timestamp
    "cy,m1,4,2099-01-01T00:00:00",       # in the future
    "ann,m1,3,2020-01-01T10:00:00",      # same user, item, time as an earlier row: kept, earlier quarantined
]

SOURCE_YAML = """interactions_path: events.csv
items_path: items.csv
id_type: str
interaction_columns: {user_id: who, item_id: what, rating: stars, timestamp: when}
item_columns: {item_id: sku, title: name, year: null, genres: tags, description: blurb, genre_separator: ";"}
"""


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "items.csv").write_text(ITEMS)
    (folder / "events.csv").write_text("\n".join(EVENTS) + "\n")
    (folder / "source.yaml").write_text(SOURCE_YAML)
    home = HomeLayout(tmp_path_factory.mktemp("home")).create()
    mp = pytest.MonkeyPatch()
    mp.setenv(SOURCE_ENV, str(folder / "source.yaml"))
    source = data_source_from_env()
    mp.undo()
    with dg.instance_for_test() as instance:
        result = build_definitions(home, source).resolve_job_def("recall_job").execute_in_process(
            instance=instance)
    return home, result, folder


def sql(home: HomeLayout, query: str) -> list[tuple]:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(query).fetchall()


CHECKS = {"raw_items_reconcile", "raw_rows_reconcile", "embeddings_finite_unit_norm_one_per_item",
          "index_matches_embeddings", "two_tower_index_matches_model",
          "every_user_has_candidates", "no_training_item_recalled", "metrics_within_unit_interval",
          "ease_model_fits_catalogue", "freshness_check", "lists_no_worse_than_published"}


def test_run_succeeds_with_all_checks(user_run):
    _, result, _ = user_run
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == CHECKS  # every check ran (none silently skipped)
    assert [e.check_name for e in evaluations if not e.passed] == []


def test_each_bad_row_is_in_quarantine_with_file_row_and_reason(user_run):
    home, _, folder = user_run
    rows = sql(home, "select source_file, source_row, reason from quarantine.interactions order by source_row")
    events = str(folder / "events.csv")
    assert rows == [(events, 1, "duplicate"), (events, 17, "unknown_item"), (events, 18, "rating_out_of_range"),
                    (events, 19, "null_user_id"), (events, 20, "unparseable_timestamp"),
                    (events, 21, "future_timestamp")]
    [(raw, clean, quarantined)] = sql(home, "select (select count(*) from raw.interactions), "
                                            "(select count(*) from clean.interactions), "
                                            "(select count(*) from quarantine.interactions)")
    assert (raw, clean, quarantined) == (22, 16, 6)
    assert sql(home, "select rating from clean.interactions where user_id = 'ann' and item_id = 'm1'") == [(3.0,)]


def test_items_are_cleaned_merged_and_composed_by_the_template(user_run):
    home, _, _ = user_run
    text = dict(sql(home, "select item_id, item_text from clean.items"))
    assert text["m1"] == "Alien Genres: horror, sci-fi A crew meets a deadly creature."
    assert text["m3"] == "The Matrix Genres: action, sci-fi A hacker learns the truth."
    assert sql(home, "select source_rows from clean.items where item_id = 'm3'") == [(2,)]


def test_text_ids_flow_to_recall_lists(user_run):
    home, _, _ = user_run
    lists = sql(home, "select user_id, count(*) from recall.latest group by user_id order by user_id")
    train = dict(sql(home, "select user_id, count(distinct item_id) from features.interactions_split "
                           "where part = 'train' group by user_id"))
    assert [user for user, _ in lists] == ["ann", "bob", "cy"]
    assert all(n == 6 - train[user] for user, n in lists)  # everything not already seen


def test_a_malformed_file_fails_the_run_with_a_clear_error(tmp_path):
    (tmp_path / "items.csv").write_text("sku,name\nm1,Alien\n")
    (tmp_path / "events.csv").write_text("who,what,when\nann,m1,2020-01-01\n")
    source = DataSource(interactions_path=str(tmp_path / "events.csv"), items_path=str(tmp_path / "items.csv"),
                        id_type="str",
                        interaction_columns={"user_id": "who", "item_id": "what", "rating": "stars",
                                             "timestamp": "when"},
                        item_columns={"item_id": "sku", "title": "name", "year": None, "genres": None})
    home = HomeLayout(tmp_path / "home").create()
    with dg.instance_for_test() as instance:
        result = build_definitions(home, source).resolve_job_def("recall_job").execute_in_process(
            instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.cause.message
    assert f"{Path(tmp_path / 'events.csv')}: column 'stars' (mapped to rating) is missing" in message


def test_cli_suggests_and_serves_text_ids(user_run, monkeypatch, capsys):
    from recall_pipeline.cli import _print_outputs, main

    home, result, _ = user_run
    monkeypatch.setenv(HOME_ENV, str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    _print_outputs(home, result.run_id)
    printed = capsys.readouterr().out
    assert "where c.user_id = 'ann'" in printed and "recall-pipeline recall ann" in printed
    assert main(["recall", "ann", "-k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["recall", "1"]) == 1  # no such user: a message, not a traceback
    assert "has no recall list" in capsys.readouterr().err


def test_changing_one_item_text_reencodes_exactly_that_item(user_run):
    """Runs last in this module: it changes the fixture's items file and re-materializes."""
    home, _, folder = user_run
    items_file = folder / "items.csv"
    items_file.write_text(items_file.read_text().replace("Toys come alive.", "Toys come alive at night."))
    mp = pytest.MonkeyPatch()
    mp.setenv(SOURCE_ENV, str(folder / "source.yaml"))
    source = data_source_from_env()
    mp.undo()
    selection = [dg.AssetKey(k) for k in ("raw_interactions", "raw_items", "cleaned_item_text", "item_embeddings")]
    with dg.instance_for_test() as instance:
        rerun = build_definitions(home, source).resolve_job_def("recall_job").execute_in_process(
            instance=instance, asset_selection=selection)
    assert rerun.success
    [event] = [e for e in rerun.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("item_embeddings")]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (metadata["encoded"], metadata["reused"]) == (1, 5)
    assert sql(home, "select item_text from clean.items where item_id = 'm4'") == [
        ("Toy Story Genres: animation, children Toys come alive at night.",)]
