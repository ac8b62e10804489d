"""The synthetic source: deterministic, exact counts, loads and cleans with nothing quarantined,
and carries the structure it promises (clusters readable from text, ratings higher in-cluster)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from recall_pipeline.cli import main
from recall_pipeline.core.ingest import synthetic
from recall_pipeline.core.ingest.interactions import clean_interactions
from recall_pipeline.core.ingest.item_text import clean_items
from recall_pipeline.resources import data_source_from_env
from recall_pipeline.settings import SOURCE_ENV

SPEC = synthetic.SyntheticSpec(n_users=120, n_items=600, n_interactions=6_000, n_clusters=8, seed=3)


@pytest.fixture(scope="module")
def data() -> synthetic.SyntheticData:
    return synthetic.generate(SPEC)


@pytest.fixture(scope="module")
def written(tmp_path_factory, data):
    return synthetic.write_source(data, tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_same_seed_gives_byte_identical_files(tmp_path, file_format):
    spec = synthetic.SyntheticSpec(n_users=40, n_items=200, n_interactions=1_500, n_clusters=6, seed=7)
    first = synthetic.write_source(synthetic.generate(spec), tmp_path / "a", file_format).parent
    second = synthetic.write_source(synthetic.generate(spec), tmp_path / "b", file_format).parent
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert names == sorted(["source.yaml", "users.parquet", f"items.{file_format}", f"interactions.{file_format}"])
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = synthetic.generate(replace(spec, seed=8))
    assert not other.interactions.equals(synthetic.generate(spec).interactions)


def test_requested_counts_exactly_and_no_repeated_pair(data):
    inter, items, users = data.interactions, data.items, data.users
    assert (inter.height, items.height, users.height) == (6_000, 600, 120)
    assert items["item_id"].sort().to_list() == list(range(1, 601))
    assert users["user_id"].to_list() == list(range(1, 121))
    per_user = inter.group_by("user_id").len().sort("user_id")
    assert per_user["user_id"].to_list() == list(range(1, 121))
    assert per_user["len"].to_list() == users["interactions"].to_list()
    assert per_user["len"].min() >= SPEC.min_per_user
    assert per_user["len"].max() <= SPEC.cap
    assert inter.select(pl.struct("user_id", "item_id").is_unique().all()).item()
    assert inter["item_id"].is_in(items["item_id"].implode()).all()


def test_events_are_time_ordered_half_star_ratings_in_the_past(data):
    inter = data.interactions
    assert inter.equals(inter.sort("user_id", "timestamp", maintain_order=True))
    assert inter["timestamp"].min() >= synthetic.WINDOW_START
    assert inter["timestamp"].max() < synthetic.WINDOW_END
    ratings = inter["rating"].to_numpy()
    assert ratings.min() >= 0.5 and ratings.max() <= 5.0
    assert np.all(ratings * 2 == np.round(ratings * 2))


def test_files_load_through_the_source_yaml_and_clean_with_nothing_quarantined(written, monkeypatch):
    monkeypatch.setenv(SOURCE_ENV, str(written))
    source = data_source_from_env()
    assert source.interactions_path.endswith("interactions.parquet")
    raw_interactions, raw_items = source.load("b1")
    assert (raw_interactions.height, raw_items.height) == (SPEC.n_interactions, SPEC.n_items)
    items, item_quarantine = clean_items(raw_items, source.id_type, source.genre_separator)
    assert item_quarantine.height == 0 and items.height == SPEC.n_items
    assert items["genres"].list.len().min() >= 1
    assert items["item_text"].str.contains(r"^.+ \(\d{4}\) Genres: ").all()
    assert not items["title"].str.ends_with(", The").any()  # the MovieLens-style titles are fixed
    clean, quarantine = clean_interactions(raw_interactions, items["item_id"], source.cleaning_rules(),
                                           datetime.now())
    assert quarantine.height == 0
    assert clean.height == SPEC.n_interactions


def test_csv_files_load_and_clean_too(tmp_path, data, monkeypatch):
    monkeypatch.setenv(SOURCE_ENV, str(synthetic.write_source(data, tmp_path, "csv")))
    source = data_source_from_env()
    raw_interactions, raw_items = source.load("b1")
    items, _ = clean_items(raw_items, source.id_type, source.genre_separator)
    clean, quarantine = clean_interactions(raw_interactions, items["item_id"], source.cleaning_rules(),
                                           datetime.now())
    assert quarantine.height == 0 and clean.height == SPEC.n_interactions
    assert clean["rating"].to_list() == data.interactions["rating"].cast(pl.Float64).to_list()


def _own_cluster_rows(data) -> pl.DataFrame:
    users = data.users.select("user_id", pl.concat_list("cluster_1", "cluster_2", "cluster_3").alias("mine"))
    return (data.interactions.join(data.items, on="item_id").join(users, on="user_id")
            .with_columns(own=pl.col("mine").list.contains(pl.col("cluster"))
                          | pl.col("mine").list.contains(pl.col("second_cluster")).fill_null(False)))


def test_users_rate_their_own_clusters_higher(data):
    rows = _own_cluster_rows(data)
    assert 0.75 < rows["own"].mean() < 0.97  # mostly their clusters, some exploring
    means = rows.group_by("user_id", "own").agg(pl.col("rating").mean()).pivot(
        "own", index="user_id", values="rating").drop_nulls()
    gap = means["true"] - means["false"]
    assert gap.mean() > 0.7
    assert (gap > 0).mean() > 0.9
    relevant = rows.group_by("own").agg((pl.col("rating") >= 4).mean()).sort("own")["rating"].to_list()
    assert relevant[1] > 3 * relevant[0]


def test_title_words_identify_the_cluster(data):
    """A word-vote classifier from titles alone (no cluster names): the cluster in which a word
    is most common, voted over a title's words, gives single-cluster items' cluster."""
    items = data.items.with_columns(words=pl.col("title").str.extract_all(r"[A-Za-z-]+"))
    counts: dict[str, Counter] = defaultdict(Counter)
    for words, cluster in items.select("words", "cluster").iter_rows():
        for word in words:
            counts[word][cluster] += 1
    single = items.filter(pl.col("second_cluster").is_null())
    right = 0
    for words, cluster in single.select("words", "cluster").iter_rows():
        votes = Counter()
        for word in words:
            (best, n), total = counts[word].most_common(1)[0], sum(counts[word].values())
            if n / total > 0.5:  # words shared by all clusters ("The", "Night") have no majority
                votes[best] += 1
        right += bool(votes) and votes.most_common(1)[0][0] == cluster
    assert right / single.height > 0.97
    # and a spanning item's title shows words of both of its clusters
    vocab = {name: set(words) for name, _, _, words in synthetic.THEMES}
    spanning = items.filter(pl.col("second_cluster").is_not_null())
    assert spanning.height > 0.08 * items.height
    for words, first, second in spanning.select("words", "cluster", "second_cluster").iter_rows():
        assert vocab[first] & set(words) and vocab[second] & set(words)


def test_genres_and_years_follow_the_cluster(data):
    themes = {name: (genres, era) for name, genres, era, _ in synthetic.THEMES}
    for genres, year, cluster, second in data.items.select("genres", "year", "cluster", "second_cluster").iter_rows():
        own = themes[cluster][0]
        allowed = set(own) | ({themes[second][0][0]} if second else set())
        assert genres.split("|")[0] == own[0] and set(genres.split("|")) <= allowed
        assert abs(year - themes[cluster][1]) <= 40


def test_popularity_is_skewed(data):
    counts = np.sort(data.interactions.group_by("item_id").len()["len"].to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.25 * counts.sum()  # top 10% of items (uniform: ~0.12)
    activity = np.sort(data.users["interactions"].to_numpy())[::-1]
    assert activity[0] > 3 * np.median(activity)


def test_sizes_and_refused_specs():
    assert synthetic.spec_for("s") == synthetic.SyntheticSpec(671, 9_066, 100_004)
    assert synthetic.spec_for("M", users=40_000).n_users == 40_000
    with pytest.raises(ValueError, match="give a size"):
        synthetic.spec_for(users=10, items=100)
    with pytest.raises(ValueError, match="unknown size"):
        synthetic.spec_for("XL")
    with pytest.raises(ValueError, match="give between 50 and 250"):
        synthetic.SyntheticSpec(10, 100, 1_000)
    with pytest.raises(ValueError, match="clusters"):
        synthetic.SyntheticSpec(10, 100, 100, n_clusters=25)


def test_cli_generate_writes_a_runnable_source(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--out", str(out), "--users", "30", "--items", "120",
                 "--interactions", "600", "--clusters", "4", "--seed", "1"]) == 0
    assert f"--source {out / 'source.yaml'}" in capsys.readouterr().out
    assert pl.read_parquet(out / "interactions.parquet").height == 600
    assert main(["generate", "--out", str(out), "--users", "3", "--items", "8",
                 "--interactions", "600"]) == 2


def test_without_text_signal_the_text_says_nothing_and_the_interactions_are_the_same(data):
    """The same spec without signal: identical interactions, users and truth columns, the same
    texts shuffled over the items, so an item's first genre is its cluster's only by chance."""
    noise = synthetic.generate(replace(SPEC, text_signal=False))
    assert noise.interactions.equals(data.interactions) and noise.users.equals(data.users)
    assert noise.items.select("item_id", "cluster", "second_cluster").equals(
        data.items.select("item_id", "cluster", "second_cluster"))
    texts = ["title", "year", "genres"]
    assert sorted(noise.items.select(texts).rows()) == sorted(data.items.select(texts).rows())
    first_genre = {name: genres[0] for name, genres, _, _ in synthetic.THEMES}

    def own_genre_share(items: pl.DataFrame) -> float:
        rows = items.select("genres", "cluster").rows()
        return sum(genres.split("|")[0] == first_genre[cluster] for genres, cluster in rows) / len(rows)

    assert own_genre_share(data.items) == 1.0
    # chance: the clusters' shares of the items, squared and summed (Zipf sizes: well above 1/8)
    shares = data.items["cluster"].value_counts(normalize=True)["proportion"].to_numpy()
    assert abs(own_genre_share(noise.items) - float((shares ** 2).sum())) < 0.06


def test_cli_generates_a_no_signal_source(tmp_path):
    out = tmp_path / "noise"
    assert main(["generate", "--users", "50", "--items", "200", "--interactions", "1000",
                 "--clusters", "4", "--no-text-signal", "--out", str(out)]) == 0
    assert "no signal" in (out / "source.yaml").read_text()
    signal = tmp_path / "signal"
    assert main(["generate", "--users", "50", "--items", "200", "--interactions", "1000",
                 "--clusters", "4", "--out", str(signal)]) == 0
    noisy, clean = (pl.read_parquet(folder / "items.parquet") for folder in (out, signal))
    assert not noisy["title"].equals(clean["title"])
    assert pl.read_parquet(out / "interactions.parquet").equals(pl.read_parquet(signal / "interactions.parquet"))
