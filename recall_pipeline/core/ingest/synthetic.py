"""A synthetic data source at any size, in the user-file format, with structure text can read.

``generate(spec)`` builds three frames; ``write_source`` writes them with a source YAML that
``recall-pipeline run --source`` reads. Everything is vectorised numpy/polars with memory linear
in the output, and seeded: the same spec gives byte-identical files.

The structure:

- **Taste clusters** (:data:`THEMES`, at most 24): each has its own title words, one to three
  genres and an era. An item belongs to one cluster; ``SPAN_FRACTION`` of the items also belong
  to a second one. A title is made of its clusters' words (plus a few words shared by all
  clusters, "The", "Return", ...), its genres are its cluster's (the first always, the others by
  chance) plus the second cluster's first genre, its year is drawn around the cluster's era. So
  ``<title> (<year>) Genres: ...`` says which cluster an item is in.
- **Popularity**: clusters are Zipf-like in size and in how many users like them; within a
  cluster items are Zipf-like by a random rank.
- **Users** like 1 to 3 clusters (a Dirichlet mixture) and explore the rest a little
  (``explore`` of their events, a cluster drawn by popularity). Activity is Zipf-like over users
  with at least ``min_per_user`` events and at most a quarter of the catalogue, summing exactly to
  the requested count. Each user is active over a random part of five years (2014-2018); events
  are time-ordered epoch seconds. A user rates an item at most once, so (user, item, timestamp)
  never repeats and cleaning quarantines nothing.
- **Ratings** (0.5 to 5.0 in half stars) are a user bias plus an item quality plus
  ``CLUSTER_BONUS`` when the item is in one of the user's clusters, plus noise.

The items file carries the truth (``cluster``, ``second_cluster``) in extra columns the pipeline
does not read; ``users.parquet`` holds each user's clusters and weights.

``text_signal=False`` writes a catalogue whose text carries **no** signal: each item's title,
year and genres are those built for another item drawn at random (a seeded permutation, from a
generator of its own), so they say nothing about the item's clusters, while the interactions
and ratings are exactly those of the same spec with signal. On it the LM routes are noise and a
recall stage must fall back to collaborative filtering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

# name, genres (first = main), era (mean release year), title words
THEMES: tuple[tuple[str, tuple[str, ...], int, tuple[str, ...]], ...] = (
    ("space", ("Sci-Fi", "Adventure"), 1996, (
        "Galaxy", "Orbit", "Nebula", "Starship", "Comet", "Asteroid", "Rocket", "Lunar", "Martian",
        "Cosmos", "Meteor", "Satellite", "Eclipse", "Pulsar", "Quasar", "Astronaut", "Supernova",
        "Gravity", "Wormhole", "Planet", "Solar", "Stellar", "Android", "Cyborg", "Laser", "Voyager")),
    ("western", ("Western", "Action"), 1962, (
        "Outlaw", "Sheriff", "Saddle", "Ranch", "Canyon", "Mesa", "Gunslinger", "Rustler",
        "Stagecoach", "Prairie", "Bandit", "Cattle", "Lasso", "Bounty", "Marshal", "Tumbleweed",
        "Mustang", "Wagon", "Spurs", "Posse", "Saloon", "Colt", "Desperado", "Rawhide", "Sagebrush")),
    ("romance", ("Romance", "Drama", "Comedy"), 2001, (
        "Heart", "Kiss", "Valentine", "Sweetheart", "Bride", "Wedding", "Honeymoon", "Darling",
        "Passion", "Lovers", "Rose", "Promise", "Embrace", "Serenade", "Amour", "Blush", "Beloved",
        "Courtship", "Engagement", "Proposal", "Crush", "Flirt", "Soulmate", "Vow", "Tender")),
    ("horror", ("Horror", "Thriller"), 1988, (
        "Haunting", "Ghost", "Crypt", "Demon", "Curse", "Zombie", "Vampire", "Coffin", "Graveyard",
        "Skull", "Phantom", "Possession", "Exorcist", "Nightmare", "Poltergeist", "Banshee", "Ghoul",
        "Blood", "Scream", "Wraith", "Tomb", "Werewolf", "Cellar", "Asylum", "Witch", "Corpse")),
    ("war", ("War", "Drama", "Action"), 1970, (
        "Battalion", "Trench", "Platoon", "Bunker", "Siege", "Infantry", "Regiment", "Sniper",
        "Artillery", "Commando", "Bayonet", "Convoy", "Frontline", "Grenade", "Paratrooper",
        "Armistice", "Blitz", "Garrison", "Sergeant", "Colonel", "Torpedo", "Submarine", "Bomber",
        "Medal", "Barracks", "Foxhole")),
    ("sports", ("Sport", "Drama", "Comedy"), 2002, (
        "Champion", "Stadium", "Quarterback", "Knockout", "Slugger", "Touchdown", "Marathon", "Coach",
        "Rookie", "Playoff", "Underdog", "Varsity", "Pitcher", "Dribble", "Trophy", "Referee",
        "League", "Striker", "Boxer", "Hurdle", "Sprint", "Rebound", "Homerun", "Tournament",
        "Jersey", "Podium")),
    ("crime", ("Crime", "Film-Noir", "Thriller"), 1975, (
        "Detective", "Gangster", "Mobster", "Heist", "Alibi", "Informant", "Racket", "Precinct",
        "Speakeasy", "Fedora", "Witness", "Verdict", "Mugshot", "Syndicate", "Bootlegger",
        "Smuggler", "Hitman", "Ransom", "Extortion", "Getaway", "Stakeout", "Prosecutor",
        "Undercover", "Contraband", "Counterfeit", "Fingerprint")),
    ("kids", ("Animation", "Children", "Comedy"), 2005, (
        "Bunny", "Puppy", "Kitten", "Dragonfly", "Teddy", "Balloon", "Lollipop", "Rainbow",
        "Carousel", "Gingerbread", "Pony", "Ducky", "Cupcake", "Marshmallow", "Puddle", "Sprinkles",
        "Bubbles", "Toybox", "Treehouse", "Picnic", "Piglet", "Doodle", "Lullaby", "Jellybean",
        "Snowflake", "Honeybee")),
    ("fantasy", ("Fantasy", "Adventure"), 2003, (
        "Dragon", "Wizard", "Sorcerer", "Kingdom", "Elven", "Enchanted", "Quest", "Scepter", "Throne",
        "Goblin", "Unicorn", "Amulet", "Prophecy", "Realm", "Sorceress", "Griffin", "Dungeon",
        "Spellbook", "Paladin", "Troll", "Rune", "Oracle", "Citadel", "Talisman", "Chalice", "Warlock")),
    ("musical", ("Musical", "Romance"), 1960, (
        "Melody", "Symphony", "Ballad", "Rhythm", "Chorus", "Harmony", "Jazz", "Tango", "Waltz",
        "Ballroom", "Broadway", "Encore", "Overture", "Crescendo", "Rhapsody", "Sonata", "Cabaret",
        "Showgirl", "Tapdance", "Jukebox", "Piano", "Saxophone", "Choir", "Lyric", "Backstage", "Opera")),
    ("nature", ("Documentary", "Nature"), 2010, (
        "Glacier", "Rainforest", "Savanna", "Wildlife", "Coral", "Migration", "Volcano", "Tundra",
        "Reef", "Predator", "Habitat", "Ecosystem", "Whale", "Penguin", "Elephant", "Cheetah",
        "Wetlands", "Canopy", "Monsoon", "Archipelago", "Falcon", "Orca", "Species", "Expedition",
        "Safari", "Wilderness")),
    ("spy", ("Thriller", "Action", "Drama"), 1985, (
        "Agent", "Espionage", "Cipher", "Dossier", "Defector", "Embassy", "Operative", "Surveillance",
        "Saboteur", "Codename", "Mole", "Microfilm", "Intercept", "Checkpoint", "Handler", "Decoy",
        "Safehouse", "Briefcase", "Passport", "Wiretap", "Rendezvous", "Infiltrator", "Covert",
        "Classified", "Encryption", "Kremlin")),
    ("comedy", ("Comedy",), 1999, (
        "Roommates", "Slacker", "Prankster", "Blunder", "Hiccup", "Goofball", "Shenanigans", "Mishap",
        "Bachelor", "Neighbors", "Barbecue", "Carpool", "Awkward", "Klutz", "Hangover", "Sleepover",
        "Roadtrip", "Wingman", "Cubicle", "Intern", "Landlord", "Karaoke", "Fiasco", "Pajama", "Nerd",
        "Mixup")),
    ("period", ("Drama", "History"), 1994, (
        "Empress", "Duchess", "Monarch", "Dynasty", "Chancellor", "Cathedral", "Manor", "Aristocrat",
        "Countess", "Regent", "Heir", "Abbey", "Tapestry", "Coronation", "Baroness", "Courtesan",
        "Parliament", "Victorian", "Renaissance", "Pharaoh", "Emperor", "Chronicle", "Tudor", "Medici",
        "Tsar", "Viceroy")),
    ("disaster", ("Action", "Thriller", "Adventure"), 1997, (
        "Inferno", "Tsunami", "Earthquake", "Avalanche", "Hurricane", "Tornado", "Meltdown",
        "Evacuation", "Aftershock", "Collapse", "Wildfire", "Flood", "Blizzard", "Shockwave", "Rescue",
        "Skyscraper", "Hostage", "Detonator", "Countdown", "Hijack", "Runway", "Turbulence",
        "Derailment", "Outbreak", "Firestorm", "Lifeboat")),
    ("teen", ("Comedy", "Drama", "Romance"), 2004, (
        "Prom", "Homecoming", "Sophomore", "Yearbook", "Detention", "Cheerleader", "Semester",
        "Graduation", "Freshman", "Hallway", "Campfire", "Skateboard", "Diary", "Babysitter", "Dorm",
        "Homework", "Bestie", "Clique", "Mixtape", "Braces", "Allowance", "Curfew", "Recess",
        "Valedictorian", "Sorority", "Backpack")),
    ("martial", ("Action", "Martial Arts"), 1984, (
        "Dojo", "Shaolin", "Samurai", "Ninja", "Katana", "Sensei", "Shogun", "Ronin", "Nunchaku",
        "Bushido", "Kimono", "Tiger", "Crane", "Lotus", "Jade", "Monk", "Bamboo", "Fist", "Pagoda",
        "Geisha", "Kendo", "Karate", "Wushu", "Sword", "Lantern", "Blossom")),
    ("food", ("Comedy", "Food", "Drama"), 2008, (
        "Kitchen", "Chef", "Recipe", "Bistro", "Souffle", "Banquet", "Feast", "Pastry", "Vineyard",
        "Truffle", "Saffron", "Espresso", "Brunch", "Bakery", "Cookbook", "Dumpling", "Noodle",
        "Spice", "Sommelier", "Croissant", "Casserole", "Gourmet", "Tavern", "Apron", "Caramel",
        "Orchard")),
    ("pirates", ("Adventure", "Action"), 1991, (
        "Pirate", "Buccaneer", "Galleon", "Treasure", "Cutlass", "Corsair", "Mariner", "Harbor",
        "Lighthouse", "Shipwreck", "Anchor", "Compass", "Parrot", "Plank", "Mutiny", "Captain",
        "Seafarer", "Tide", "Lagoon", "Kraken", "Schooner", "Doubloon", "Rigging", "Sailor", "Cove",
        "Mermaid")),
    ("mystery", ("Mystery", "Thriller", "Drama"), 2001, (
        "Obsession", "Paranoia", "Amnesia", "Mirror", "Stranger", "Insomnia", "Labyrinth", "Whisper",
        "Deception", "Enigma", "Riddle", "Vertigo", "Echo", "Hypnosis", "Doppelganger", "Illusion",
        "Memory", "Suspect", "Motive", "Clue", "Puzzle", "Masquerade", "Trance", "Fracture",
        "Delusion", "Hallucination")),
    ("cars", ("Action", "Adventure"), 1980, (
        "Highway", "Motorcycle", "Roadster", "Turbo", "Racetrack", "Drifter", "Convertible",
        "Pitstop", "Garage", "Speedway", "Trucker", "Engine", "Throttle", "Asphalt", "Interstate",
        "Gasoline", "Mileage", "Overdrive", "Hotrod", "Diesel", "Chrome", "Piston", "Rally", "Exhaust",
        "Freeway", "Carburetor")),
    ("politics", ("Drama", "Biography"), 1998, (
        "Senator", "Campaign", "Ballot", "Courtroom", "Lawyer", "Jury", "Testimony", "Congress",
        "Governor", "Election", "Scandal", "Lobbyist", "Mayor", "Diplomat", "Candidate", "Appeal",
        "Justice", "Amendment", "Petition", "Subpoena", "Attorney", "Debate", "Treaty", "Cabinet",
        "Whistleblower", "Impeachment")),
    ("superhero", ("Action", "Sci-Fi", "Adventure"), 2012, (
        "Hero", "Mask", "Cape", "Vigilante", "Mutant", "Villain", "Sidekick", "Titan", "Avenger",
        "Guardian", "Thunder", "Lightning", "Shield", "Hammer", "Legion", "Nemesis", "Crusader",
        "Sentinel", "Invincible", "Atomic", "Spectacular", "Metropolis", "Omega", "Hyper", "Mighty",
        "Superpower")),
    ("family", ("Drama", "Family"), 1993, (
        "Farmhouse", "Porch", "Grandmother", "Quilt", "Reunion", "Heartland", "Barn", "Meadow",
        "Creek", "Chapel", "Sunday", "Harvest", "Lemonade", "Sister", "Brother", "Daughter", "Father",
        "Mother", "Cottage", "Garden", "Kinfolk", "Hometown", "Scarecrow", "Tractor", "Pasture",
        "Grandpa")),
)

# Words any title may use: they say nothing about the cluster.
SHARED_WORDS = ("Last", "Return", "Night", "Rise", "Legend", "Day", "Fall", "City", "Blue", "Red",
                "Lost", "Big", "Little", "Story", "Dark", "Golden", "Wild", "Forever", "Final", "New")
SEQUELS = ("II", "III", "IV", "V")

# (users, items, interactions): S is the bundled data's size.
SIZES = {"S": (671, 9_066, 100_004), "M": (20_000, 100_000, 1_000_000),
         "L": (200_000, 1_000_000, 10_000_000)}

WINDOW_START = 1_388_534_400  # 2014-01-01T00:00:00Z
WINDOW_END = 1_546_300_800    # 2019-01-01T00:00:00Z
SPAN_FRACTION = 0.15          # items that also belong to a second cluster
CLUSTER_ZIPF = 0.8            # cluster popularity ~ rank^-0.8
ITEM_ZIPF = 1.0               # item popularity within a cluster ~ rank^-1
ACTIVITY_ZIPF = 0.8           # interactions per user ~ rank^-0.8 (then clipped to [min, cap])
CLUSTER_BONUS = 1.0           # rating bonus for an item of one of the user's clusters
BASE_RATING = 2.7
SAMPLING_ROUNDS = 8           # popularity-weighted rounds before the uniform top-up


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int
    n_items: int
    n_interactions: int
    n_clusters: int = 20
    seed: int = 0
    min_per_user: int = 5
    text_signal: bool = True  # False: item texts drawn independently of the taste clusters

    def __post_init__(self) -> None:
        if not 1 <= self.n_clusters <= len(THEMES):
            raise ValueError(f"clusters must be between 1 and {len(THEMES)}, got {self.n_clusters}")
        if self.n_users < 1 or self.n_items < self.n_clusters:
            raise ValueError(f"need at least one user and one item per cluster ({self.n_clusters} items), "
                             f"got {self.n_users} users and {self.n_items} items")
        if self.min_per_user < 1 or self.min_per_user > self.cap:
            raise ValueError(f"min_per_user must be between 1 and {self.cap} (a quarter of the items), "
                             f"got {self.min_per_user}")
        low, high = self.min_per_user * self.n_users, self.cap * self.n_users
        if not low <= self.n_interactions <= high:
            raise ValueError(
                f"{self.n_interactions} interactions cannot be spread over {self.n_users} users with "
                f"{self.min_per_user} to {self.cap} each (a user rates at most a quarter of the "
                f"{self.n_items} items): give between {low} and {high}")

    @property
    def cap(self) -> int:
        """Most interactions one user has: a quarter of the catalogue, and 40 times the mean."""
        mean = max(1, self.n_interactions // max(1, self.n_users))
        return max(1, min(self.n_items // 4, 40 * mean))


def spec_for(size: str | None = None, *, users: int | None = None, items: int | None = None,
             interactions: int | None = None, **options) -> SyntheticSpec:
    """A spec from a named size (S, M, L), with any of the three counts overriding it."""
    if size is None and None in (users, items, interactions):
        raise ValueError("give a size (S, M, L) or all of users, items and interactions")
    if size and size.upper() not in SIZES:
        raise ValueError(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
    base = SIZES[size.upper()] if size else (0, 0, 0)
    counts = [given if given is not None else default
              for given, default in zip((users, items, interactions), base)]
    return SyntheticSpec(*counts, **options)


@dataclass(frozen=True)
class SyntheticData:
    spec: SyntheticSpec
    items: pl.DataFrame          # item_id, title, year, genres, cluster, second_cluster
    interactions: pl.DataFrame   # user_id, item_id, rating, timestamp (sorted by user, time)
    users: pl.DataFrame          # user_id, interactions, cluster_1..3, weight_1..3, explore


def _zipf(n: int, exponent: float) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float64) ** -exponent


def _split_counts(total: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``total`` split over the weights: the floors of the shares, the rest drawn by weight."""
    share = weights / weights.sum()
    counts = np.floor(share * total).astype(np.int64)
    rest = total - int(counts.sum())
    if rest:
        counts += np.bincount(rng.choice(len(weights), size=rest, p=share), minlength=len(weights))
    return counts


def _activity(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: Zipf-like by a random rank, in [min_per_user, cap], summing exactly."""
    weights = _zipf(spec.n_users, ACTIVITY_ZIPF)[rng.permutation(spec.n_users)]
    counts = np.full(spec.n_users, spec.min_per_user, dtype=np.int64)
    remaining = spec.n_interactions - int(counts.sum())
    while remaining > 0:
        room = counts < spec.cap
        counts += _split_counts(remaining, weights * room, rng)
        over = np.maximum(counts - spec.cap, 0)
        counts -= over
        remaining = int(over.sum())
    return counts


def _items(spec: SyntheticSpec, cluster_weight: np.ndarray, rng: np.random.Generator):
    """Item clusters, within-cluster popularity, quality and the items frame (by item index)."""
    n, c = spec.n_items, spec.n_clusters
    sizes = np.maximum(_split_counts(n - c, cluster_weight, rng), 0) + 1  # every cluster has an item
    primary = np.repeat(np.arange(c), sizes)
    spans = rng.random(n) < (SPAN_FRACTION if c > 1 else 0.0)
    # second cluster: drawn by popularity, shifted off the primary
    second = rng.choice(c, size=n, p=cluster_weight / cluster_weight.sum())
    second = np.where(second == primary, (second + 1 + rng.integers(0, max(c - 1, 1), n)) % c, second)
    second = np.where(spans & (c > 1), second, -2)
    # Zipf popularity by a random rank inside each cluster
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    order = np.lexsort((rng.random(n), primary))  # random order inside each cluster
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    popularity = (rank + 1.0) ** -ITEM_ZIPF
    quality = rng.normal(0.0, 0.35, n)
    frame = _item_frame(spec, primary, second, rng)
    if not spec.text_signal:  # another item's text: its own generator keeps every other draw as is
        frame = frame[np.random.default_rng([spec.seed, 1]).permutation(n)]
    return primary, second, popularity, quality, frame


def _item_frame(spec: SyntheticSpec, primary: np.ndarray, second: np.ndarray,
                rng: np.random.Generator) -> pl.DataFrame:
    n, c = spec.n_items, spec.n_clusters
    themes = THEMES[:c]
    vocab_sizes = np.array([len(t[3]) for t in themes])
    offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])
    words = pl.Series([w for t in themes for w in t[3]])
    other = np.where(second >= 0, second, primary)
    first_word = (rng.random(n) * vocab_sizes[primary]).astype(np.int64)
    second_word = (rng.random(n) * vocab_sizes[other]).astype(np.int64)
    same = (other == primary) & (second_word == first_word)
    second_word = np.where(same, (second_word + 1) % vocab_sizes[other], second_word)
    # a spanning item puts its second cluster's word first half of the time
    swap = (second >= 0) & (rng.random(n) < 0.5)
    w1 = np.where(swap, offsets[other] + second_word, offsets[primary] + first_word)
    w2 = np.where(swap, offsets[primary] + first_word, offsets[other] + second_word)
    pattern = rng.choice(7, size=n, p=[0.3, 0.15, 0.15, 0.12, 0.1, 0.1, 0.08])
    frame = pl.DataFrame({
        "a": words.gather(w1), "b": words.gather(w2),
        "s": pl.Series(SHARED_WORDS).gather(rng.integers(0, len(SHARED_WORDS), n)),
        "r": pl.Series(SEQUELS).gather(rng.integers(0, len(SEQUELS), n)),
        "p": pattern, "two": second >= 0,
    })
    a, b, s, r, p = (pl.col(x) for x in "absrp")
    # a spanning item always shows both clusters' words
    title = (pl.when((p == 0) | (p.is_in([2, 3]) & pl.col("two"))).then(pl.format("{} {}", a, b))
             .when(p == 1).then(pl.format("{} of the {}", a, b))
             .when(p == 2).then(pl.format("{} {}", s, b))
             .when(p == 3).then(pl.format("The {}", a))
             .when(p == 4).then(pl.format("{} {} {}", a, b, r))
             .when(p == 5).then(pl.format("{}: {} of the {}", a, s, b))
             .otherwise(pl.format("{} and {}, The", a, b)))  # MovieLens style, fixed by cleaning
    titles = frame.select(title.alias("title"))["title"]
    eras = np.array([t[2] for t in themes])
    years = np.clip(np.round(rng.normal(eras[primary], 7.0)), 1930, 2018).astype(np.int64)
    return pl.DataFrame({"title": titles, "year": years, "genres": _genres(themes, primary, second, rng)})


def _genres(themes, primary: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> pl.Series:
    """The cluster's first genre, each other genre of the cluster with probability 0.5, and the
    second cluster's first genre; as "A|B" strings (few distinct combinations: built once each)."""
    names = sorted({g for t in themes for g in t[1]})
    index = {g: i for i, g in enumerate(names)}
    table = np.full((len(themes), 3), -1, dtype=np.int64)
    for row, theme in enumerate(themes):
        table[row, : len(theme[1])] = [index[g] for g in theme[1]]
    n = len(primary)
    codes = table[primary].copy()
    codes[:, 1:] = np.where(rng.random((n, 2)) < 0.5, codes[:, 1:], -1)
    extra = np.where(second >= 0, table[np.maximum(second, 0), 0], -1)
    extra = np.where((extra[:, None] == codes).any(axis=1), -1, extra)
    combos, inverse = np.unique(np.column_stack([codes, extra]), axis=0, return_inverse=True)
    strings = pl.Series(["|".join(names[g] for g in combo if g >= 0) for combo in combos])
    return strings.gather(inverse.ravel())


def _users(spec: SyntheticSpec, cluster_weight: np.ndarray, rng: np.random.Generator):
    """Each user's (up to) three clusters (-1 = none) and weights, explore share and rating bias."""
    u, c = spec.n_users, spec.n_clusters
    k = np.minimum(rng.choice([1, 2, 3], size=u, p=[0.4, 0.4, 0.2]), c)
    # clusters without replacement, by popularity: the top k of log-weight plus Gumbel noise
    keys = np.log(cluster_weight)[None, :] + rng.gumbel(size=(u, c))
    top = np.argsort(-keys, axis=1)[:, :3]
    if top.shape[1] < 3:
        top = np.pad(top, ((0, 0), (0, 3 - top.shape[1])), constant_values=-1)
    used = np.arange(3)[None, :] < k[:, None]
    clusters = np.where(used, top, -1)
    mix = rng.gamma(2.0, size=(u, 3)) * used
    explore = rng.uniform(0.05, 0.2, u)
    weights = mix / mix.sum(axis=1, keepdims=True) * (1 - explore)[:, None]
    bias = rng.normal(0.0, 0.3, u)
    return clusters, weights, explore, bias


def _sampler(spec: SyntheticSpec, primary, second, popularity):
    """A cumulative table over (cluster, member item) pairs: cluster c's block runs from c to c+1,
    so an item of cluster c by popularity is ``searchsorted(cdf, c + uniform)``. Spanning items
    are members of both clusters, with half their weight in the second."""
    has_second = second >= 0
    member_item = np.concatenate([np.arange(spec.n_items), np.flatnonzero(has_second)])
    member_cluster = np.concatenate([primary, second[has_second]])
    member_weight = np.concatenate([popularity, 0.5 * popularity[has_second]])
    order = np.argsort(member_cluster, kind="stable")
    member_item, member_cluster, member_weight = member_item[order], member_cluster[order], member_weight[order]
    totals = np.bincount(member_cluster, weights=member_weight, minlength=spec.n_clusters)
    within = np.cumsum(member_weight) - np.repeat(np.cumsum(totals) - totals, np.bincount(member_cluster))
    cdf = member_cluster + within / totals[member_cluster]
    last = np.cumsum(np.bincount(member_cluster, minlength=spec.n_clusters)) - 1
    cdf[last] = np.arange(spec.n_clusters) + 1.0
    return cdf, member_item


def _sample_items(user: np.ndarray, clusters, weights, cluster_weight, cdf, member_item,
                  rng: np.random.Generator) -> np.ndarray:
    """One item per row for the row's user: a cluster from the user's mixture (or, exploring, from
    all clusters by popularity), then an item of that cluster by popularity."""
    cum = np.cumsum(weights, axis=1)
    draw = rng.random(len(user))
    component = np.zeros(len(user), dtype=np.int64)
    for j in range(3):
        component += draw >= cum[user, j]
    chosen = clusters[user, np.minimum(component, 2)]
    explore = (component == 3) | (chosen < 0)
    chosen = np.where(explore, rng.choice(len(cluster_weight), size=len(user),
                                          p=cluster_weight / cluster_weight.sum()), chosen)
    position = np.searchsorted(cdf, chosen + rng.random(len(user)), side="right")
    return member_item[np.minimum(position, len(member_item) - 1)]


def _pairs(spec: SyntheticSpec, counts, clusters, weights, cluster_weight, cdf, member_item,
           rng: np.random.Generator) -> np.ndarray:
    """Distinct (user, item) keys ``user * n_items + item``, exactly ``counts[u]`` per user, sorted.

    Rounds draw each user's missing items and drop repeats; after ``SAMPLING_ROUNDS`` the few
    still missing (heavy users of small clusters) are drawn uniformly from the catalogue, which
    always ends because a user rates at most a quarter of it."""
    keys = np.empty(0, dtype=np.int64)
    missing = counts.copy()
    attempt = 0
    while missing.any():
        user = np.repeat(np.arange(spec.n_users, dtype=np.int64), missing)
        if attempt < SAMPLING_ROUNDS:
            item = _sample_items(user, clusters, weights, cluster_weight, cdf, member_item, rng)
        else:
            item = rng.integers(0, spec.n_items, len(user))
        new = np.unique(user * spec.n_items + item)
        if len(keys):
            found = np.searchsorted(keys, new)
            seen = keys[np.minimum(found, len(keys) - 1)] == new
            new = new[~seen]
        keys = np.sort(np.concatenate([keys, new]))
        missing = counts - np.bincount(keys // spec.n_items, minlength=spec.n_users)
        attempt += 1
    return keys


def generate(spec: SyntheticSpec) -> SyntheticData:
    """The three frames of a synthetic source (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    c = spec.n_clusters
    cluster_weight = _zipf(c, CLUSTER_ZIPF)[rng.permutation(c)]
    primary, second, popularity, quality, item_frame = _items(spec, cluster_weight, rng)
    clusters, weights, explore, bias = _users(spec, cluster_weight, rng)
    counts = _activity(spec, rng)
    cdf, member_item = _sampler(spec, primary, second, popularity)
    keys = _pairs(spec, counts, clusters, weights, cluster_weight, cdf, member_item, rng)
    del cdf, member_item
    user = keys // spec.n_items
    item = keys % spec.n_items
    del keys

    liked = np.zeros(len(user), dtype=bool)
    for j in range(3):  # column by column: no rows x 3 temporaries
        theirs = clusters[user, j]
        liked |= (theirs == primary[item]) | (theirs == second[item])
    del theirs
    score = BASE_RATING + bias[user] + quality[item] + CLUSTER_BONUS * liked + rng.normal(0.0, 0.6, len(user))
    rating = np.clip(np.round(score * 2) / 2, 0.5, 5.0).astype(np.float32)
    del score, liked

    # each user is active over a random stretch of the window; events spread uniformly over it
    window = WINDOW_END - WINDOW_START - 1
    span = np.maximum(rng.beta(0.7, 1.3, spec.n_users) * window, 86_400).astype(np.int64)
    start = WINDOW_START + (rng.random(spec.n_users) * (window - span)).astype(np.int64)
    offset = (rng.random(len(user)) * span[user]).astype(np.int64)
    order = np.argsort((user << 32) | offset, kind="stable")
    user, item, rating, offset = user[order], item[order], rating[order], offset[order]
    del order

    item_ids = rng.permutation(spec.n_items).astype(np.int64) + 1  # ids say nothing about clusters
    names = pl.Series([t[0] for t in THEMES[:c]])
    interactions = pl.DataFrame({
        "user_id": user + 1, "item_id": item_ids[item], "rating": rating, "timestamp": start[user] + offset,
    })
    del user, item, rating, offset
    items = item_frame.select(
        pl.Series("item_id", item_ids), "title", "year", "genres",
        names.gather(primary).alias("cluster"),
        pl.when(pl.Series(second >= 0)).then(names.gather(np.maximum(second, 0))).alias("second_cluster"),
    ).sort("item_id")

    def cluster_name(j: int) -> pl.Series:
        column = clusters[:, j]
        return pl.select(pl.when(pl.Series(column >= 0)).then(names.gather(np.maximum(column, 0))))[:, 0]

    users = pl.DataFrame({
        "user_id": np.arange(1, spec.n_users + 1, dtype=np.int64), "interactions": counts,
        **{f"cluster_{j + 1}": cluster_name(j) for j in range(3)},
        **{f"weight_{j + 1}": weights[:, j] for j in range(3)},
        "explore": explore,
    })
    return SyntheticData(spec, items, interactions, users)


SOURCE_TEMPLATE = """\
# A synthetic source written by `recall-pipeline generate`: {users} users, {items} items,
# {interactions} interactions, {clusters} taste clusters, seed {seed}{no_signal}.
# Truth the pipeline does not read: items' cluster / second_cluster columns, {users_file}.
interactions_path: {interactions_file}
items_path: {items_file}
id_type: int
rating_min: 0.5
rating_max: 5.0
interaction_columns: {{user_id: user_id, item_id: item_id, rating: rating, timestamp: timestamp}}
item_columns: {{item_id: item_id, title: title, year: year, genres: genres, description: null,
               genre_separator: "|"}}
"""


def write_source(data: SyntheticData, folder: str | Path, file_format: str = "parquet") -> Path:
    """Write interactions, items and users files and ``source.yaml``; return the YAML's path."""
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be parquet or csv, got {file_format!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: f"{name}.{file_format}" for name in ("interactions", "items")}
    for name, frame in (("interactions", data.interactions), ("items", data.items)):
        path = folder / files[name]
        if file_format == "parquet":
            frame.write_parquet(path, statistics=False)
        else:
            frame.write_csv(path)
    data.users.write_parquet(folder / "users.parquet", statistics=False)
    spec = data.spec
    source = folder / "source.yaml"
    source.write_text(SOURCE_TEMPLATE.format(
        users=spec.n_users, items=spec.n_items, interactions=spec.n_interactions,
        clusters=spec.n_clusters, seed=spec.seed, users_file="users.parquet",
        no_signal="" if spec.text_signal else ", item texts independent of the clusters (no signal)",
        interactions_file=files["interactions"], items_file=files["items"]))
    return source
