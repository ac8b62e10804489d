"""Coordinated pushes: many suspicious accounts giving one item an extreme rating within a short window.

A feedback loop can be pushed: a few dozen accounts that each rate one target item 5 stars
(plus some filler ratings, to look like users) make the item co-occur with what honest users
liked, and collaborative filtering then recalls it for everyone (a shilling or fake-account
attack). Honest bulk activity looks different: the accounts that rate a new blockbuster in its
first hour or week mostly have a real history.

A **burst** is, for one item and one direction (high or low ratings), and for one of the windows
(``window_seconds``, an hour by default, and the slower ``day_window_seconds`` and
``week_window_seconds``: an attack spread over days, a few accounts at a time, is the same
cluster seen from further):

- at least ``min_accounts`` distinct *suspicious* accounts, each giving the item an *extreme*
  rating, all within the window of the first;
- a suspicious account is **new** (at most ``max_prior_history`` interactions, any item, older
  than ``window_seconds`` before its rating: what it did in the same session, its filler
  ratings, does not count as history) or **thin**, whatever its age: at most ``thin_history``
  interactions in all besides this rating. A sleeper account that rated six ordinary movies
  over a month before the push, and four after, is thin; the bundled data's users (20 ratings or
  more each) never are;
- an extreme rating is within ``extreme_share`` of the rating range from its top (high) or, with
  ``include_low``, from its bottom (low). On the 0.5-5 scale with the default 0.15 that is 4.5
  and 5.0 (high) and 0.5 and 1.0 (low); on a 1-5 scale, 5 and 1. Implicit feedback (no rating)
  counts as high;
- and those accounts' ratings are at least ``min_share_of_item`` of all the item's ratings in the
  window, so that newcomers among a crowd of established users rating a hit are left alone.

With ``feedback_only`` (the default) only feedback rows (from the inbox) can be burst ratings and
the source's rows count only as history: a source loaded at once (its first day, when every user
is new, or timestamps to the day) is the operator's own data, and the guard is for the feedback
loop. ``feedback_only=False`` looks at every row.

Overlapping or touching windows (consecutive burst ratings less than a window apart) form one
burst. What is quarantined: every row of each burst account within one window before the burst's
first rating to one window after its last, i.e. the burst rating and the filler ratings of the
same session (or, for a slow burst, of the same days). The account's other rows stay clean, so
that an honest account caught in a burst keeps the rest of its history. The windows are tried
shortest first, and an account in a burst already is not looked at again over a longer one: a
fast burst keeps its short quarantine span.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

REASON = "suspected_burst"


@dataclass(frozen=True)
class BurstSettings:
    """When ratings count as a coordinated burst (see the module docstring); ``enabled=False``
    turns the guard off."""

    enabled: bool = True
    min_accounts: int = 20
    window_seconds: int = 3600
    # the same test over longer windows, for pushes spread over days (0: that window is off)
    day_window_seconds: int = 86_400
    week_window_seconds: int = 604_800
    max_prior_history: int = 3
    # at most this many interactions in all besides the rating: a thin account, whatever its age
    thin_history: int = 12
    extreme_share: float = 0.15
    include_low: bool = True
    min_share_of_item: float = 0.5
    feedback_only: bool = True


def _extreme_thresholds(settings: BurstSettings, rating_min: float, rating_max: float) -> tuple[float, float]:
    margin = settings.extreme_share * (rating_max - rating_min)
    return rating_max - margin, rating_min + margin


def _group_keys(group: np.ndarray, seconds: np.ndarray, origin: int, stride: int) -> np.ndarray:
    """One sortable int64 per row: rows of one group in one block, by time within the block."""
    return group.astype(np.int64) * stride + (seconds - origin)


def find_bursts(rows: pl.DataFrame, settings: BurstSettings = BurstSettings(), rating_min: float = 0.5,
                rating_max: float = 5.0, implicit: bool = False, key: str = "row") -> pl.DataFrame:
    """The rows to quarantine as a suspected burst, with ``burst`` (a number per burst) and
    ``detail`` (naming the item, the window and the count).

    ``rows``: valid interactions with ``key`` (unique per row), ``user_id``, ``item_id``,
    ``rating`` (Float64; ignored when ``implicit``) and ``timestamp`` (Datetime), and optionally
    ``eligible`` (Boolean: only such rows can be burst ratings; ``settings.feedback_only`` is the
    caller's to apply). The history that decides whether an account is new or thin is taken from
    ``rows`` themselves, so pass every valid interaction, not only the new ones.
    """
    out_schema = {key: rows.schema[key] if key in rows.columns else pl.Int64, "burst": pl.Int64,
                  "detail": pl.String}
    if not settings.enabled or rows.is_empty():
        return pl.DataFrame(schema=out_schema)
    base = int(settings.window_seconds)
    high, low = _extreme_thresholds(settings, rating_min, rating_max)
    polarity = (pl.lit("high") if implicit else
                pl.when(pl.col("rating") >= high).then(pl.lit("high"))
                .when(pl.lit(settings.include_low) & (pl.col("rating") <= low)).then(pl.lit("low")))
    if "eligible" in rows.columns:
        polarity = pl.when(pl.col("eligible")).then(polarity)
    frame = rows.select(key, "user_id", "item_id", sec=pl.col("timestamp").dt.epoch("s"), polarity=polarity)
    seconds = frame["sec"].to_numpy()
    origin, span = int(seconds.min()), int(seconds.max() - seconds.min())

    # history older than one window before each row, and in all, per account
    frame = frame.sort("user_id", "sec").with_columns(
        user_rank=pl.col("user_id").rank("dense").cast(pl.Int64) - 1, others=pl.len().over("user_id") - 1,
        item_code=pl.col("item_id").rank("dense").cast(pl.Int64) - 1)
    ranks, stride = frame["user_rank"].to_numpy(), span + base + 1
    keys = _group_keys(ranks, frame["sec"].to_numpy(), origin, stride)
    user_start = np.searchsorted(keys, ranks * stride)
    prior = np.maximum(np.searchsorted(keys, keys - base, side="left") - user_start, 0)
    frame = frame.with_columns(prior=pl.Series(prior, dtype=pl.Int64))

    # each suspicious (new or thin) account's first extreme rating of an item, by item and direction
    candidates = (
        frame.filter(pl.col("polarity").is_not_null()
                     & ((pl.col("prior") <= settings.max_prior_history) | (pl.col("others") <= settings.thin_history)))
        .sort("sec").unique(["item_id", "polarity", "user_id"], keep="first")
        .sort("item_id", "polarity", "sec")
    )
    if candidates.height < settings.min_accounts:
        return pl.DataFrame(schema=out_schema)
    slow = (int(settings.day_window_seconds), int(settings.week_window_seconds))
    windows = list(dict.fromkeys((base, *(w for w in slow if w > 0))))  # shortest first
    # every rating of each item by time (any account, any rating): the item's ratings in a window
    stride = span + max(windows) + 1
    item_ratings = np.sort(_group_keys(frame["item_code"].to_numpy(), frame["sec"].to_numpy(), origin, stride))
    found, offset = [], 0
    for window in windows:
        if candidates.height < settings.min_accounts:
            break
        part, members = _bursts_in(frame, candidates, item_ratings, window, settings, (high, low), implicit, key,
                                   origin, stride)
        if not part.is_empty():
            found.append(part.with_columns(pl.col("burst") + offset))
            offset += int(part["burst"].max()) + 1
            # an account in a burst already is not looked at again over a longer window
            candidates = candidates.join(members, on=["item_id", "polarity", "user_id"], how="anti",
                                         maintain_order="left")
    if not found:
        return pl.DataFrame(schema=out_schema)
    quarantined = pl.concat(found).unique(key, keep="first", maintain_order=True)
    return quarantined.select(pl.col(key).cast(out_schema[key]), "burst", "detail").sort(key)


def _bursts_in(frame: pl.DataFrame, candidates: pl.DataFrame, item_ratings: np.ndarray, window: int,
               settings: BurstSettings, thresholds: tuple[float, float], implicit: bool, key: str, origin: int,
               stride: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the quarantined rows (``key``, ``burst``, ``detail``) of the bursts within ``window``, their
    member ratings (``item_id``, ``polarity``, ``user_id``)); ``item_ratings``: the sorted keys of
    every rating by item and time."""
    empty = (pl.DataFrame(schema={key: frame.schema[key], "burst": pl.Int64, "detail": pl.String}),
             candidates.select("item_id", "polarity", "user_id").clear())
    changes = candidates.select((pl.col("item_id") != pl.col("item_id").shift(1))
                                | (pl.col("polarity") != pl.col("polarity").shift(1))).to_series()
    groups = np.cumsum(changes.fill_null(True).to_numpy()) - 1  # one number per (item, direction)
    c_sec = candidates["sec"].to_numpy()
    c_keys = _group_keys(groups, c_sec, origin, stride)
    end = np.searchsorted(c_keys, c_keys + window, side="left")  # rows i..end-1: within a window of row i
    accounts = end - np.arange(len(c_keys))

    # every rating of the item in the same windows (any account, any rating), for the share
    c_item_keys = _group_keys(candidates["item_code"].to_numpy(), c_sec, origin, stride)
    ratings = (np.searchsorted(item_ratings, c_item_keys + window, side="left")
               - np.searchsorted(item_ratings, c_item_keys, side="left"))

    flagged_start = (accounts >= settings.min_accounts) & (accounts >= settings.min_share_of_item * ratings)
    if not flagged_start.any():
        return empty
    cover = np.zeros(len(c_keys) + 1, dtype=np.int64)
    np.add.at(cover, np.flatnonzero(flagged_start), 1)
    np.add.at(cover, end[flagged_start], -1)
    in_burst = np.cumsum(cover)[:-1] > 0

    # bursts: runs of flagged rows of one item and direction, consecutive ones under a window apart
    previous_in = np.concatenate([[False], in_burst[:-1]])
    same_group = np.concatenate([[False], groups[1:] == groups[:-1]])
    close = np.concatenate([[False], np.diff(c_sec) < window])
    starts = in_burst & ~(previous_in & same_group & close)
    burst_id = np.cumsum(starts) - 1
    members = candidates.with_columns(burst=pl.Series(burst_id, dtype=pl.Int64)).filter(
        pl.Series(in_burst))
    bursts = members.group_by("burst").agg(
        pl.col("item_id").first(), pl.col("polarity").first(),
        first=pl.col("sec").min(), last=pl.col("sec").max(), accounts=pl.col("user_id").n_unique())
    high, low = thresholds

    def describe(burst: dict) -> str:
        start = datetime(1970, 1, 1) + timedelta(seconds=burst["first"])
        stop = datetime(1970, 1, 1) + timedelta(seconds=burst["last"])
        extreme = f">= {high:g}" if burst["polarity"] == "high" else f"<= {low:g}"
        if implicit:
            extreme = "(implicit feedback)"
        return (f"suspected burst on item {burst['item_id']}: {burst['accounts']} new or thin accounts (at most "
                f"{settings.max_prior_history} earlier interactions, or {settings.thin_history} in all) rated it "
                f"{extreme} between {start} and {stop} (window {window} s, threshold {settings.min_accounts} "
                f"accounts); their rows within {window} s of the burst are quarantined")

    bursts = bursts.with_columns(detail=pl.Series([describe(b) for b in bursts.iter_rows(named=True)],
                                                  dtype=pl.String))
    spans = members.select("burst", "user_id").join(bursts.select("burst", "first", "last", "detail"), on="burst")
    quarantined = (
        frame.select(key, "user_id", "sec").join(spans, on="user_id")
        .filter(pl.col("sec").is_between(pl.col("first") - window, pl.col("last") + window))
        .sort("burst").unique(key, keep="first").select(key, "burst", "detail")
    )
    return quarantined, members.select("item_id", "polarity", "user_id")


def burst_summary(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Per suspected burst in a quarantine table: its detail, rows and accounts."""
    bursts = quarantine.filter(pl.col("reason") == REASON)
    return (bursts.group_by("detail", maintain_order=True)
            .agg(rows=pl.len(), accounts=pl.col("user_id").n_unique())
            .select("rows", "accounts", "detail"))
