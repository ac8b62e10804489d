"""The burst detector on constructed frames, alone and inside cleaning."""

from datetime import datetime, timedelta

import polars as pl

from recall_pipeline.core.ingest.bursts import REASON, BurstSettings, burst_summary, find_bursts
from recall_pipeline.core.ingest.interactions import CleaningRules, clean_interactions
from recall_pipeline_tests.conftest import raw_frame

T0 = datetime(2016, 12, 1, 10, 0, 0)
TARGET, FILLER = 500, 1
DAY = timedelta(days=1)


def frame(events: list[tuple]) -> pl.DataFrame:
    """(user, item, rating, time) tuples as the detector's input, keyed by position."""
    return pl.DataFrame(
        {"row": list(range(len(events))), "user_id": [e[0] for e in events], "item_id": [e[1] for e in events],
         "rating": [float(e[2]) for e in events], "timestamp": [e[3] for e in events]},
        schema={"row": pl.Int64, "user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64,
                "timestamp": pl.Datetime("us")})


def established(users: range, history: int = 20) -> list[tuple]:
    """Users with ``history`` ratings of ordinary items, weeks before T0 (the bundled data's
    users have 20 or more; 12 or fewer in all is a thin account)."""
    return [(u, 100 + h, 3.5, T0 - 30 * DAY + h * timedelta(hours=1)) for u in users for h in range(history)]


def attack(users: range, item: int = TARGET, rating: float = 5.0, spacing: timedelta = timedelta(seconds=1),
           filler: bool = True) -> list[tuple]:
    """Each new account rates ``item`` (one per ``spacing``) and then one filler item."""
    events = []
    for n, u in enumerate(users):
        events.append((u, item, rating, T0 + n * spacing))
        if filler:
            events.append((u, FILLER, 4.0, T0 + n * spacing + timedelta(seconds=5)))
    return events


def flagged_rows(events: list[tuple], settings: BurstSettings = BurstSettings(), **kwargs) -> set[int]:
    return set(find_bursts(frame(events), settings, **kwargs)["row"].to_list())


def test_a_burst_of_new_accounts_is_flagged_with_its_filler_ratings():
    honest = established(range(1, 31))
    events = honest + attack(range(1000, 1050))
    found = find_bursts(frame(events))
    attack_rows = set(range(len(honest), len(events)))
    assert set(found["row"]) == attack_rows  # the 50 target ratings and the 50 fillers, nothing else
    assert found["burst"].n_unique() == 1
    detail = found["detail"][0]
    assert f"item {TARGET}" in detail and "50 new or thin accounts" in detail and ">= 4.325" in detail
    assert "between 2016-12-01 10:00:00 and 2016-12-01 10:00:49" in detail and "window 3600 s" in detail


def test_established_users_rating_a_new_blockbuster_at_once_are_left_alone():
    # 200 established users rate a new release 5 stars in its first ten minutes
    events = established(range(1, 201)) + [(u, TARGET, 5.0, T0 + u * timedelta(seconds=3)) for u in range(1, 201)]
    assert flagged_rows(events) == set()


def test_newcomers_among_a_crowd_of_established_fans_are_left_alone():
    # 25 brand-new accounts join 100 established users rating a hit in its first hour
    crowd = established(range(1, 101)) + [(u, TARGET, 5.0, T0 + u * timedelta(seconds=30)) for u in range(1, 101)]
    assert flagged_rows(crowd + attack(range(1000, 1025), filler=False)) == set()
    # without the crowd the same 25 accounts are a burst
    assert len(flagged_rows(established(range(1, 101)) + attack(range(1000, 1025), filler=False))) == 25


def test_the_account_count_threshold():
    honest = established(range(1, 11))
    assert flagged_rows(honest + attack(range(1000, 1019))) == set()  # 19 accounts
    assert len(flagged_rows(honest + attack(range(1000, 1020)))) == 40  # 20 accounts, 2 rows each
    assert flagged_rows(honest + attack(range(1000, 1020)), BurstSettings(min_accounts=21)) == set()
    assert flagged_rows(honest + attack(range(1000, 1050)), BurstSettings(enabled=False)) == set()


HOUR_ONLY = BurstSettings(day_window_seconds=0, week_window_seconds=0)


def test_the_window():
    # 30 accounts, one every 190 s: 92 minutes in all, at most 19 in any hour
    slow = attack(range(1000, 1030), spacing=timedelta(seconds=190))
    assert flagged_rows(slow, HOUR_ONLY) == set()
    assert len(flagged_rows(slow, BurstSettings(window_seconds=2 * 3600, day_window_seconds=0,
                                                week_window_seconds=0))) == 60
    assert len(flagged_rows(slow)) == 60  # the day's window sees them all
    overlapping = find_bursts(frame(slow), BurstSettings(min_accounts=15))
    assert overlapping.height == 60 and overlapping["burst"].n_unique() == 1  # overlapping windows: one burst
    # 19 accounts in 19 s and a 20th 3599 s after the first: a burst; 3600 s after: none
    for delay, rows in ((3599, 40), (3600, 0)):
        last = [(1019, TARGET, 5.0, T0 + timedelta(seconds=delay)),
                (1019, FILLER, 4.0, T0 + timedelta(seconds=delay + 5))]
        assert len(flagged_rows(attack(range(1000, 1019)) + last, HOUR_ONLY)) == rows


def test_the_history_threshold_counts_only_history_older_than_the_window():
    aged = [(u, 100 + h, 3.0, T0 - 2 * DAY + h * timedelta(minutes=1)) for u in range(1000, 1030) for h in range(3)]
    assert len(flagged_rows(aged + attack(range(1000, 1030)))) == 30 * 2  # 3 old ratings: still new
    older = [(u, 100 + h, 3.0, T0 - 2 * DAY + h * timedelta(minutes=1)) for u in range(1000, 1030) for h in range(4)]
    not_thin = BurstSettings(thin_history=4)  # 4 old ratings and a filler: 5 besides the target
    assert flagged_rows(older + attack(range(1000, 1030)), not_thin) == set()  # 4: established
    assert len(flagged_rows(older + attack(range(1000, 1030)), BurstSettings(max_prior_history=4, thin_history=4))) == 60
    assert len(flagged_rows(older + attack(range(1000, 1030)))) == 60  # but thin: 5 interactions besides it
    # ten filler ratings in the same session do not make an account established
    session = [(u, 100 + h, 3.0, T0 - timedelta(minutes=10) + h * timedelta(seconds=1))
               for u in range(1000, 1030) for h in range(10)]
    assert len(flagged_rows(session + attack(range(1000, 1030)))) == 30 * 12


def test_only_extreme_ratings_count_and_low_ones_count_as_well():
    assert flagged_rows(attack(range(1000, 1030), rating=4.0)) == set()
    assert len(flagged_rows(attack(range(1000, 1030), rating=4.5))) == 60
    assert len(flagged_rows(attack(range(1000, 1030), rating=0.5))) == 60  # a down-voting attack
    assert flagged_rows(attack(range(1000, 1030), rating=0.5), BurstSettings(include_low=False)) == set()
    # high and low ratings of one item are two bursts' worth of accounts, not one
    mixed = attack(range(1000, 1015), rating=5.0, filler=False) + attack(range(2000, 2015), rating=1.0, filler=False)
    assert flagged_rows(mixed) == set()
    # on a 1-10 scale, 9 is extreme and 8 is not
    assert len(flagged_rows(attack(range(1000, 1030), rating=9.0, filler=False), rating_min=1, rating_max=10)) == 30
    assert flagged_rows(attack(range(1000, 1030), rating=8.0, filler=False), rating_min=1, rating_max=10) == set()


def test_rows_outside_the_burst_are_unaffected():
    honest = established(range(1, 31))
    later = [(u, 200, 4.0, T0 + 3 * DAY) for u in range(1000, 1050)]  # the accounts' later activity
    other_item = [(u, 300, 5.0, T0 + timedelta(minutes=u % 50)) for u in range(1, 31)]  # honest, same hour
    events = honest + attack(range(1000, 1050)) + later + other_item
    found = flagged_rows(events)
    start = len(honest)
    assert found == set(range(start, start + 100))
    # and two bursts on two items are two bursts
    two = frame(attack(range(1000, 1030)) + attack(range(2000, 2030), item=TARGET + 1))
    assert find_bursts(two)["burst"].n_unique() == 2


def test_only_eligible_rows_can_be_burst_ratings_but_all_rows_are_history():
    events = attack(range(1000, 1030))
    eligible = frame(events).with_columns(eligible=pl.lit(False))
    assert find_bursts(eligible).is_empty()
    assert find_bursts(eligible.with_columns(eligible=pl.lit(True))).height == 60
    # ineligible (source) rows still make an account established
    older = [(u, 100 + h, 3.0, T0 - 2 * DAY + h * timedelta(minutes=1)) for u in range(1000, 1030) for h in range(20)]
    mixed = frame(older + events).with_columns(eligible=pl.col("row") >= len(older))
    assert find_bursts(mixed).is_empty()


def test_string_ids_and_implicit_feedback():
    events = attack(range(1000, 1030), filler=False)
    strings = frame(events).with_columns(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    assert find_bursts(strings).height == 30
    implicit = frame(events).with_columns(rating=pl.lit(None, dtype=pl.Float64))
    assert find_bursts(implicit, implicit=True).height == 30


def test_cleaning_quarantines_the_burst_and_reconciles():
    honest = [(u, 10 + h % 2, 4.0, T0 - 30 * DAY + h * timedelta(hours=1)) for u in range(1, 6) for h in range(5)]
    events = honest + [(u, 12, 5.0, T0 + (u - 1000) * timedelta(seconds=1)) for u in range(1000, 1025)]
    raw = raw_frame([{"user_id": str(u), "item_id": str(i), "rating": str(r), "timestamp": t.isoformat()}
                     for u, i, r, t in events])
    known = pl.Series([10, 11, 12])
    clean, quarantine = clean_interactions(raw, known, CleaningRules(), datetime(2026, 1, 1))
    assert clean.height == len(honest) and quarantine.height == 25
    assert set(quarantine["reason"]) == {REASON}
    assert quarantine["timestamp"][0] == T0.isoformat()  # the raw text is kept
    summary = burst_summary(quarantine)
    assert summary.select("rows", "accounts").rows() == [(25, 25)] and "item 12" in summary["detail"][0]
    off = clean_interactions(raw, known, CleaningRules(), datetime(2026, 1, 1), BurstSettings(enabled=False))
    assert off[0].height == len(events) and off[1].is_empty()
    # the same rows from the source, not the inbox: only with feedback_only=False
    source = raw.with_columns(source_kind=pl.lit("source"))
    assert clean_interactions(source, known, CleaningRules(), datetime(2026, 1, 1))[1].is_empty()
    wide = clean_interactions(source, known, CleaningRules(), datetime(2026, 1, 1), BurstSettings(feedback_only=False))
    assert wide[1].height == 25
    inbox = raw.with_columns(source_kind=pl.when(pl.col("user_id").cast(pl.Int64) >= 1000)
                             .then(pl.lit("feedback")).otherwise(pl.lit("source")))
    assert clean_interactions(inbox, known, CleaningRules(), datetime(2026, 1, 1))[1].height == 25


def test_bundled_data_has_no_burst(bundled_raw):
    """The real ratings, 100,004 of them, hold no burst at the default thresholds, even with
    every row looked at (they are the source, not feedback)."""
    from recall_pipeline.core.ingest.item_text import clean_items

    raw_interactions, raw_items = bundled_raw
    items, _ = clean_items(raw_items)
    clean, quarantine = clean_interactions(raw_interactions, items["item_id"], CleaningRules(), datetime.now(),
                                           BurstSettings(feedback_only=False))
    assert quarantine.is_empty() and clean.height == raw_interactions.height


def sleepers(users: range, item: int = TARGET, start: datetime = T0, spacing: timedelta = timedelta(minutes=1),
             before: int = 6, after: int = 4) -> list[tuple]:
    """Accounts that rate ``before`` ordinary popular items over the month before the push, the
    target 5 stars (one per ``spacing``), then ``after`` more ordinary ones over two days."""
    events = []
    for n, u in enumerate(users):
        events += [(u, 10 + (u + h) % 10, 4.0, start - 30 * DAY + h * 5 * DAY) for h in range(before)]
        events.append((u, item, 5.0, start + n * spacing))
        events += [(u, 20 + (u + h) % 10, 3.5, start + (h + 1) * 12 * timedelta(hours=1)) for h in range(after)]
    return events


def test_sleeper_accounts_are_thin_whatever_their_age():
    honest = established(range(1, 31))
    found = find_bursts(frame(honest + sleepers(range(1000, 1030))))
    targets = found.join(frame(honest + sleepers(range(1000, 1030))), on="row").filter(pl.col("item_id") == TARGET)
    assert targets.height == 30 and "30 new or thin accounts" in found["detail"][0]
    assert not set(found["row"]) & set(range(len(honest)))  # the honest users' rows stay clean
    # with a real history (20 ratings besides) the same accounts are left alone
    assert flagged_rows(honest + sleepers(range(1000, 1030), before=16, after=4)) == set()


def test_a_push_spread_over_days_is_seen_by_the_longer_windows():
    # 30 thin accounts, 5 a day for six days: never 20 in an hour or a day, 30 in a week
    slow = [e for day in range(6) for e in sleepers(range(1000 + 5 * day, 1005 + 5 * day), start=T0 + day * DAY)]
    assert flagged_rows(slow, BurstSettings(week_window_seconds=0)) == set()
    found = find_bursts(frame(slow))
    assert "window 604800 s" in found["detail"][0]
    events = frame(slow)
    assert found.join(events, on="row").filter(pl.col("item_id") == TARGET).height == 30


def test_a_camouflaged_burst_of_new_accounts_is_flagged():
    # 30 new accounts over ten minutes, each rating the target 5 stars and three others 3 stars
    camouflaged = [e for n, u in enumerate(range(1000, 1030))
                   for e in [(u, TARGET, 5.0, T0 + n * timedelta(seconds=20))]
                   + [(u, 40 + (u + h) % 50, 3.0, T0 + n * timedelta(seconds=20) + (h + 1) * timedelta(seconds=3))
                      for h in range(3)]]
    assert len(flagged_rows(established(range(1, 31)) + camouflaged)) == 30 * 4
