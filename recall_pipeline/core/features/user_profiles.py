"""User profiles from item embeddings and item text: three views of what a user likes.

1. **History vector**: the normalised, weighted sum of the user's training items' embeddings.
   Each item weighs ``rating / rating_max`` (1 for implicit feedback) times
   ``0.5 ** (age / half_life)``, where age is the time between the interaction and the user's
   latest training interaction; items rated below the user's own mean rating (disliked) are
   multiplied by ``dislike_weight``, so they count less but are not ignored.
2. **Interest text**: a short, human-readable sentence written from the history (the most liked
   genres and a few recently liked titles), which the same LM encodes, so that a profile can be
   read by a person and compared with item text.
3. **Multi-interest vectors**: up to ``max_interests`` centroids from clustering the user's
   liked items (one per ``items_per_interest`` liked items), each with the share of the liked
   weight it holds, so that a user who likes both horror and children's films is not averaged
   into neither (a PinnerSage-style, training-free view on frozen LM embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.cluster.vq import kmeans2

from recall_pipeline.core.ids import positions
from recall_pipeline.core.scoring import with_columns

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class ProfileSettings:
    rating_max: float = 5.0
    half_life_days: float = 365.0
    dislike_weight: float = 0.25
    max_interests: int = 4
    items_per_interest: int = 10
    text_genres: int = 3
    text_titles: int = 3
    seed: int = 0


@dataclass(frozen=True)
class UserProfiles:
    """Unit-norm history vectors for the users with training history."""

    user_ids: np.ndarray
    vectors: np.ndarray
    history_sizes: np.ndarray


def history_weights(train: pl.DataFrame, settings: ProfileSettings = ProfileSettings()) -> pl.DataFrame:
    """``train`` with ``weight`` and ``liked`` columns (liked: rating at least the user's mean)."""
    age_days = (
        (pl.col("timestamp").max().over("user_id") - pl.col("timestamp")).dt.total_seconds()
        / SECONDS_PER_DAY
    )
    rating_share = (pl.col("rating") / settings.rating_max).fill_null(1.0)
    liked = (pl.col("rating") >= pl.col("rating").mean().over("user_id")).fill_null(True)
    return train.with_columns(liked=liked).with_columns(
        weight=rating_share * (0.5 ** (age_days / settings.half_life_days))
        * pl.when(pl.col("liked")).then(1.0).otherwise(settings.dislike_weight)
    )


def build_user_profiles(train: pl.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray,
                        settings: ProfileSettings = ProfileSettings()) -> UserProfiles:
    """History vectors of every user in ``train`` (user_id, item_id, rating, timestamp).

    ``item_ids`` must be sorted ascending and aligned with the rows of ``item_vectors``.
    """
    weighted = history_weights(train, settings)
    user_ids = np.sort(weighted["user_id"].unique().to_numpy())
    rows = positions(user_ids, weighted["user_id"].to_numpy(), "users")
    cols = positions(item_ids, weighted["item_id"].to_numpy(), "training items among the embeddings")
    weights = sp.csr_matrix((weighted["weight"].to_numpy(), (rows, cols)),
                            shape=(len(user_ids), len(item_ids)))
    vectors = np.asarray(weights @ item_vectors, dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sizes = np.bincount(rows, minlength=len(user_ids))
    return UserProfiles(user_ids, vectors, sizes)


def _join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def top_genres(liked: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each user's ``n`` genres of most liked weight (``liked``: user_id, genres (one per row),
    weight), heaviest first, equal weights by name: user_id, genres (a list).

    Each sum adds its genre's weights in sorted order. polars' parallel group-by adds them in an
    order that varies from call to call, and genres that share their items (Action and
    Adventure) tie exactly only if added alike: otherwise the last bit decides their order, the
    same history gives another sentence on the next run, and a kept sentence is not found."""
    return (liked.group_by("user_id", "genres").agg(pl.col("weight").sort().sum())
            .sort(["user_id", "weight", "genres"], descending=[False, True, False])
            .group_by("user_id", maintain_order=True).agg(pl.col("genres").head(n)))


def interest_texts(train: pl.DataFrame, items: pl.DataFrame,
                   settings: ProfileSettings = ProfileSettings()) -> pl.DataFrame:
    """One sentence per user: their most liked genres and most recently liked titles.

    ``items`` has item_id, title, year and genres (a list). Returns user_id, profile_text.
    """
    liked = (history_weights(train, settings).filter("liked")
             .join(items.select("item_id", "title", "year", "genres"), on="item_id", how="left"))
    genres = top_genres(liked.explode("genres").drop_nulls("genres"), settings.text_genres)
    titles = (liked.drop_nulls("title")
              .with_columns(label=pl.when(pl.col("year").is_not_null())
                            .then(pl.format("{} ({})", "title", "year")).otherwise(pl.col("title")))
              .sort(["user_id", "timestamp", "item_id"], descending=[False, True, False])
              .group_by("user_id", maintain_order=True).agg(pl.col("label").head(settings.text_titles)))
    users = train.select("user_id").unique().sort("user_id")
    merged = users.join(genres, on="user_id", how="left").join(titles, on="user_id", how="left")
    texts = []
    for _user, favourite, recent in merged.iter_rows():
        parts = []
        if favourite:
            parts.append(f"Likes {_join_words(favourite)}.")
        if recent:
            parts.append(f"Recently liked {_join_words(recent)}.")
        texts.append(" ".join(parts))
    return merged.select("user_id").with_columns(pl.Series("profile_text", texts, dtype=pl.String))


def interest_count(n_liked: int, settings: ProfileSettings = ProfileSettings()) -> int:
    """How many interests a history of ``n_liked`` liked items supports (1 to max_interests)."""
    return int(min(settings.max_interests, max(1, n_liked // settings.items_per_interest)))


def cluster_interests(vectors: np.ndarray, weights: np.ndarray, k: int,
                      seed: int = 0) -> list[tuple[np.ndarray, float, int]]:
    """(unit centroid, weight share, item count) per non-empty cluster, heaviest first."""
    if k <= 1 or len(vectors) <= k:
        centroid = (weights[:, None] * vectors).sum(axis=0)
        return [(centroid / max(np.linalg.norm(centroid), 1e-12), 1.0, len(vectors))]
    _, labels = kmeans2(vectors.astype(np.float64), k, minit="++", seed=np.random.default_rng(seed))
    total = weights.sum()
    out = []
    for label in np.unique(labels):
        members = labels == label
        centroid = (weights[members, None] * vectors[members]).sum(axis=0)
        out.append((centroid / max(np.linalg.norm(centroid), 1e-12), float(weights[members].sum() / total),
                    int(members.sum())))
    return sorted(out, key=lambda interest: -interest[1])


def multi_interests(train: pl.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray,
                    settings: ProfileSettings = ProfileSettings()) -> pl.DataFrame:
    """user_id, interest (0 = heaviest), weight, n_items, embedding for each user's interests."""
    liked = history_weights(train, settings).filter("liked").sort("user_id", "item_id")
    cols = positions(item_ids, liked["item_id"].to_numpy(), "liked items among the embeddings")
    users = liked["user_id"].to_numpy()
    weights = liked["weight"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], int)
    ends = np.r_[starts[1:], len(users)]
    rows: list[tuple] = []
    for start, end in zip(starts, ends):
        k = interest_count(end - start, settings)
        clusters = cluster_interests(item_vectors[cols[start:end]], weights[start:end], k, settings.seed)
        rows += [(users[start], i, share, n, centroid.astype(np.float32))
                 for i, (centroid, share, n) in enumerate(clusters)]
    dims = item_vectors.shape[1]
    if not rows:
        return pl.DataFrame(schema={"user_id": train.schema["user_id"], "interest": pl.Int32,
                                    "weight": pl.Float64, "n_items": pl.Int64,
                                    "embedding": pl.Array(pl.Float32, dims)})
    return pl.DataFrame({
        "user_id": pl.Series([r[0] for r in rows], dtype=train.schema["user_id"]),
        "interest": pl.Series([r[1] for r in rows], dtype=pl.Int32),
        "weight": [r[2] for r in rows],
        "n_items": pl.Series([r[3] for r in rows], dtype=pl.Int64),
        "embedding": np.vstack([r[4] for r in rows]),
    })


def profile_tables(train: pl.DataFrame, items: pl.DataFrame, item_ids: np.ndarray, item_vectors: np.ndarray,
                   model: str, encode, settings: ProfileSettings = ProfileSettings(),
                   previous_texts: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(``features.user_profiles``, ``features.user_interests``) rows of the users in ``train``:
    history vector, interest text and its encoding (``encode``: texts -> vectors), interests.

    With ``encode`` None the LM is not loaded (importing it costs about 10 s on a busy 2-core
    machine, most of a small feedback refresh): each user keeps the interest text and encoding
    of ``previous_texts`` (user_id, profile_text, interest_embedding; none for a new user)."""
    history = build_user_profiles(train, item_ids, item_vectors, settings)
    user_ids = pl.Series("user_id", history.user_ids, dtype=train.schema["user_id"])  # typed when empty too
    if encode is None:
        texts = pl.DataFrame(user_ids).join(previous_texts, on="user_id", how="left")
    else:
        texts = interest_texts(train, items, settings)
        texts = texts.with_columns(pl.Series("interest_embedding", encode(texts["profile_text"].to_list())))
    profiles = pl.DataFrame({"user_id": user_ids, "history_size": history.history_sizes,
                             "model": model, "embedding": history.vectors}).cast({"user_id": user_ids.dtype})
    return profiles.join(texts, on="user_id", how="left"), multi_interests(train, item_ids, item_vectors, settings)


def interest_vectors(interests: pl.DataFrame, profiles: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(owner user id, vector) of every interest the ``lm_interest`` route searches with: the
    k-means interests (``features.user_interests``: user_id, embedding) and each profile's
    encoded interest text (``features.user_profiles``: user_id, interest_embedding)."""
    texts = (profiles.filter(pl.col("interest_embedding").is_not_null())
             .select("user_id", pl.col("interest_embedding").alias("embedding")))
    both = pl.concat([interests.select("user_id", "embedding"), texts.cast({"embedding": interests.schema["embedding"]})])
    if both.is_empty():
        return both["user_id"].to_numpy(), np.zeros((0, 1), dtype=np.float32)
    return both["user_id"].to_numpy(), np.ascontiguousarray(both["embedding"].to_numpy(), dtype=np.float32)


def profile_scorer(user_vectors: np.ndarray, item_vectors: np.ndarray):
    """The history vectors as a dense scorer (the ``lm_profile`` route, for evaluation): inner
    products of user profiles and item embeddings (``user_vectors`` aligned with the rating
    matrix's users, zero rows for users without one)."""
    return with_columns(lambda rows: user_vectors[rows] @ item_vectors.T,
                        lambda columns: profile_scorer(user_vectors, item_vectors[columns]))
