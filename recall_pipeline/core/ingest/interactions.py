"""Cleaning raw interactions: parse, validate, resolve duplicates, quarantine the rest.

Every raw row ends either in the clean frame or in the quarantine frame with exactly one reason
(the first rule it breaks, in the order of :data:`REASONS`), so raw rows = clean + quarantined.
Valid rows of a coordinated burst of new accounts (:mod:`.bursts`) are quarantined last, as
``suspected_burst``. A column in which *no* value parses is a wrong column mapping, not bad rows:
that raises :class:`~recall_pipeline.core.ingest.sources.SourceError` naming the file, column and
first row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from recall_pipeline.core.ids import IdType, id_dtype, parse_id
from recall_pipeline.core.ingest.bursts import REASON as BURST, BurstSettings, find_bursts
from recall_pipeline.core.ingest.feedback import FEEDBACK_KIND
from recall_pipeline.core.ingest.sources import SourceError

# Quarantine reasons, in the order the rules are applied.
REASONS = (
    "null_user_id",
    "unparseable_user_id",
    "null_item_id",
    "unparseable_item_id",
    "null_timestamp",
    "unparseable_timestamp",
    "future_timestamp",
    "null_rating",
    "unparseable_rating",
    "rating_out_of_range",
    "unknown_item",
    "duplicate",
    BURST,  # "suspected_burst"
)

TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")
OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
EPOCH_UNITS = {"s": 1_000_000, "ms": 1_000}
CLEAN_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "source_file", "source_row", "batch_id")


@dataclass(frozen=True)
class CleaningRules:
    """What a valid interaction is. ``has_rating=False`` means implicit feedback (rating null)."""

    id_type: IdType = "int"
    has_rating: bool = True
    rating_min: float = 0.5
    rating_max: float = 5.0
    # Clock skew allowed before a timestamp counts as "in the future".
    future_tolerance: timedelta = timedelta(hours=1)
    # Numeric timestamps are epoch seconds ("s") or epoch milliseconds ("ms").
    epoch_unit: str = "s"


def parse_timestamp(text: pl.Expr, epoch_unit: str = "s") -> pl.Expr:
    """A naive UTC Datetime from epoch seconds or milliseconds (``epoch_unit``), or ISO-8601.

    ISO-8601 values without an offset are read as UTC; values with one (``Z``, ``+02:00``,
    ``-0130``) are converted to UTC.
    """
    stripped = text.str.strip_chars()
    epoch = stripped.cast(pl.Float64, strict=False)
    epoch = pl.when(epoch.is_finite()).then(epoch * EPOCH_UNITS[epoch_unit])
    epoch = pl.when(epoch.abs() < 1e17).then(epoch)  # beyond year 5000: not a timestamp
    from_epoch = epoch.round(0).cast(pl.Int64, strict=False).cast(pl.Datetime("us"))
    naive = [stripped.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in TIMESTAMP_FORMATS]
    offset_text = stripped.str.replace(r"Z$", "+00:00")
    with_offset = [offset_text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)
                   .dt.replace_time_zone(None) for fmt in OFFSET_FORMATS]
    return pl.coalesce(from_epoch, *naive, *with_offset)


def _blank(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().fill_null("") == ""


def _parsed(raw: pl.DataFrame, rules: CleaningRules) -> pl.DataFrame:
    return raw.with_columns(
        p_user=parse_id(pl.col("user_id"), rules.id_type),
        p_item=parse_id(pl.col("item_id"), rules.id_type),
        p_time=parse_timestamp(pl.col("timestamp"), rules.epoch_unit),
        p_rating=pl.col("rating").str.strip_chars().cast(pl.Float64, strict=False),
    )


def check_columns_parse(parsed: pl.DataFrame, rules: CleaningRules) -> None:
    """Raise SourceError when a whole column fails to parse (a wrong column or wrong type)."""
    checks = [("user_id", "p_user", f"an {rules.id_type} id"),
              ("item_id", "p_item", f"an {rules.id_type} id"),
              ("timestamp", "p_time", f"a timestamp (epoch {'milliseconds' if rules.epoch_unit == 'ms' else 'seconds'}"
                                      " or ISO-8601; epoch_unit sets seconds or milliseconds)")]
    if rules.has_rating:
        checks.append(("rating", "p_rating", "a number"))
    for source_file, part in parsed.group_by("source_file", maintain_order=True):
        for column, parsed_column, expected in checks:
            filled = part.filter(~_blank(column))
            if filled.height and filled[parsed_column].null_count() == filled.height:
                first = filled.row(0, named=True)
                raise SourceError(
                    f"{source_file[0]}: column {column} has no value that parses as {expected} "
                    f"(row {first['source_row']}: {first[column]!r}); check the column mapping"
                )


def _reason(rules: CleaningRules, now: datetime, known_items: pl.Series) -> pl.Expr:
    """The first rule each row breaks, or null for a valid row (duplicates come later)."""
    latest = now + rules.future_tolerance
    rating_rules = []
    if rules.has_rating:
        rating_rules = [
            (_blank("rating"), "null_rating"),
            (pl.col("p_rating").is_null() | pl.col("p_rating").is_nan(), "unparseable_rating"),
            (~pl.col("p_rating").is_between(rules.rating_min, rules.rating_max), "rating_out_of_range"),
        ]
    rules_in_order = [
        (_blank("user_id"), "null_user_id"),
        (pl.col("p_user").is_null(), "unparseable_user_id"),
        (_blank("item_id"), "null_item_id"),
        (pl.col("p_item").is_null(), "unparseable_item_id"),
        (_blank("timestamp"), "null_timestamp"),
        (pl.col("p_time").is_null(), "unparseable_timestamp"),
        (pl.col("p_time") > pl.lit(latest), "future_timestamp"),
        *rating_rules,
        (~pl.col("p_item").is_in(known_items.implode()), "unknown_item"),
    ]
    expr = pl.when(rules_in_order[0][0]).then(pl.lit(rules_in_order[0][1]))
    for condition, reason in rules_in_order[1:]:
        expr = expr.when(condition).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def _detail(rules: CleaningRules) -> pl.Expr:
    """A human-readable explanation naming the offending column and value."""
    reason = pl.col("reason")
    return (
        pl.when(reason.str.starts_with("null_"))
        .then(pl.format("column {} is empty", reason.str.strip_prefix("null_")))
        .when(reason == "unparseable_user_id")
        .then(pl.format("user_id {} is not a valid {} id", pl.col("user_id"), pl.lit(rules.id_type)))
        .when(reason == "unparseable_item_id")
        .then(pl.format("item_id {} is not a valid {} id", pl.col("item_id"), pl.lit(rules.id_type)))
        .when(reason == "unparseable_timestamp")
        .then(pl.format("timestamp {} is neither epoch seconds nor ISO-8601", pl.col("timestamp")))
        .when(reason == "future_timestamp")
        .then(pl.format("timestamp {} is after the load time", pl.col("p_time").cast(pl.String)))
        .when(reason == "unparseable_rating")
        .then(pl.format("rating {} is not a number", pl.col("rating")))
        .when(reason == "rating_out_of_range")
        .then(pl.format("rating {} is outside [{}, {}]", pl.col("rating"),
                        pl.lit(rules.rating_min), pl.lit(rules.rating_max)))
        .when(reason == "unknown_item")
        .then(pl.format("item_id {} is not in the item catalogue", pl.col("item_id")))
        .when(reason == "duplicate")
        .then(pl.lit("same user, item and timestamp as a later-loaded row, which was kept"))
        .when(reason == BURST)
        .then(pl.col("burst_detail"))
    )


def clean_interactions(raw: pl.DataFrame, known_items: pl.Series, rules: CleaningRules,
                       now: datetime, bursts: BurstSettings = BurstSettings()
                       ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw interactions into ``(clean, quarantine)``.

    ``clean`` has typed ``user_id``, ``item_id``, ``rating`` (null for implicit feedback),
    ``timestamp`` and the provenance columns. ``quarantine`` keeps the raw text of every rejected
    row with its provenance, ``reason`` and ``detail``. Of rows sharing (user, item, timestamp)
    the last loaded (latest batch, then highest source row) is kept, as a later correction.
    The rows of a coordinated burst (``bursts``; ``BurstSettings(enabled=False)``: none) are
    then quarantined as ``suspected_burst``, with a detail naming the item, window and count;
    with ``bursts.feedback_only``, only rows whose ``source_kind`` is feedback can be burst
    ratings (a frame without ``source_kind`` does not say: all can).
    """
    parsed = _parsed(raw, rules)
    check_columns_parse(parsed, rules)
    flagged = parsed.with_columns(reason=_reason(rules, now, known_items.cast(id_dtype(rules.id_type))))
    order = flagged.with_columns(_order=pl.int_range(pl.len()))
    valid = order.filter(pl.col("reason").is_null())
    keep_last = (
        valid.sort("loaded_at", "batch_id", "source_row", "_order")
        .group_by("p_user", "p_item", "p_time", maintain_order=True)
        .agg(pl.col("_order").last())
        .get_column("_order")
    )
    flagged = order.with_columns(
        reason=pl.when(pl.col("reason").is_null() & ~pl.col("_order").is_in(keep_last.implode()))
        .then(pl.lit("duplicate"))
        .otherwise(pl.col("reason"))
    )
    valid = flagged.filter(pl.col("reason").is_null())
    eligible = (pl.col("source_kind") == FEEDBACK_KIND if bursts.feedback_only and "source_kind" in raw.columns
                else pl.lit(True))
    burst = find_bursts(
        valid.select(pl.col("_order").alias("row"), pl.col("p_user").alias("user_id"),
                     pl.col("p_item").alias("item_id"), pl.col("p_rating").alias("rating"),
                     pl.col("p_time").alias("timestamp"), eligible.fill_null(False).alias("eligible")),
        bursts, rules.rating_min, rules.rating_max, implicit=not rules.has_rating)
    flagged = flagged.join(burst.select(pl.col("row").alias("_order"), pl.col("detail").alias("burst_detail")),
                           on="_order", how="left").with_columns(
        reason=pl.when(pl.col("burst_detail").is_not_null()).then(pl.lit(BURST)).otherwise(pl.col("reason")))
    clean = flagged.filter(pl.col("reason").is_null()).sort("_order").select(
        pl.col("p_user").alias("user_id"),
        pl.col("p_item").alias("item_id"),
        (pl.col("p_rating") if rules.has_rating else pl.lit(None, dtype=pl.Float64)).alias("rating"),
        pl.col("p_time").alias("timestamp"),
        "source_file", "source_row", "batch_id",
    )
    quarantine = flagged.filter(pl.col("reason").is_not_null()).sort("_order").select(
        "source_file", "source_row", "batch_id", "user_id", "item_id", "rating", "timestamp",
        "reason", _detail(rules).alias("detail"),
    )
    return clean, quarantine


def nothing_clean_message(quarantine: pl.DataFrame) -> str:
    """Why a load produced no valid interaction at all, for the error that stops the run."""
    reasons = quarantine.group_by("reason").len().sort("len", descending=True)
    summary = ", ".join(f"{reason}: {n}" for reason, n in reasons.iter_rows())
    example = quarantine.row(0, named=True) if quarantine.height else None
    where = (f"; first: {example['source_file']} row {example['source_row']}: {example['detail']}"
             if example else "")
    return (f"no valid interactions: all {quarantine.height} rows were quarantined ({summary}){where}. "
            "Check the column mapping, epoch_unit (seconds or milliseconds) and the rating range.")
