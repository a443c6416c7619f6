"""Generate a synthetic KKBox-like "demo world" whose true replay probabilities are known.

The world imitates the public statistics of the KKBox Music Recommendation Challenge (see
``FACTS.md`` of the KKBox sample): file formats, sizes, long-tailed activity, cold-start users
and songs in test, context shares and replay rates, and the quirks of the real files. Each row's
``target`` is a Bernoulli draw from a known probability ``p_true`` (written to ``truth_*.csv``),
so every model can be compared with the oracle.

Usage::

    python scripts/make_demo_world.py --out OUT --scale tiny|demo|full [--seed N] [--audio]

Writes ``OUT/data/{train,test,songs,members,song_extra_info}.csv`` in the KKBox format, plus
``truth_train.csv``, ``truth_test.csv`` (column ``p_true``, row-aligned) and ``song_style.csv``
(the audible style dimensions of every song). With ``--audio`` it also renders one 3 s clip per
song of ``songs.csv`` into ``OUT/audio/`` with ``OUT/audio/manifest.csv`` (``song_id,path``).

The taste model: ``p_true = sigmoid(logit)`` with

``logit = context(tab, screen, type) + user bias + user x library-context bias + song bias
(popularity-related) + artist bias + TASTE_EFFECT * affinity(user taste, song style)
+ time drift + member effects``.

A song's style has audible dimensions (rendered into its audio) and hidden ones (only seen
through co-listening). Users also choose which songs they play by the same affinity, on top of a
long-tailed popularity, so co-occurrence carries taste as well.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit, ndtr
from tqdm import tqdm

# ---------------------------------------------------------------------------------------------
# effect sizes of the taste model (logit scale unless stated); tune here
# ---------------------------------------------------------------------------------------------

#: sd of the user's own replay bias
SIGMA_USER = 0.55
#: sd of the user's extra bias in library contexts (my library, local-library/playlist); this is
#: what makes user x source_type replay rates informative
SIGMA_USER_LIBRARY = 0.45
#: song bias per sd of log popularity (popular songs are replayed more)
SONG_POPULARITY_EFFECT = 0.22
#: sd of the song's own bias beyond popularity
SIGMA_SONG = 0.35
#: sd of the artist bias shared by the artist's songs ("Various Artists" gets none)
SIGMA_ARTIST = 0.30
#: logit per sd of the user-song affinity (taste . style)
TASTE_EFFECT = 0.75
#: weights of the audible and hidden style dims in the replay affinity: what a user replays
#: depends mostly on how it sounds
REPLAY_WEIGHTS = (1.0, 0.7)
#: weights of the audible and hidden style dims in choosing what to play: what a user meets
#: depends mostly on the hidden dims (scene, playlists, friends), so co-listening reveals the
#: hidden dims better than the audible ones
CHOICE_WEIGHTS = (0.5, 1.0)
#: share of a song's style variance inherited from its artist
ARTIST_STYLE_SHARE = 0.5
#: linear drift from the first to the last day of the timeline, and a 3-week wave on top
DRIFT_LINEAR = -0.25
DRIFT_WAVE = 0.08
#: members registered during the timeline (from 2016-12-01) replay less
NEW_MEMBER_EFFECT = -0.30
#: members whose subscription expires before 2017-03-01 replay less
EXPIRING_MEMBER_EFFECT = -0.50
#: members registered via code 4 replay a little less
VIA4_EFFECT = -0.12

#: strength of taste in choosing a song among the candidates, by context group
CHOICE_TASTE = {"library": 2.0, "discovery": 1.2, "radio": 0.7, "social": 0.9}
#: candidates drawn by popularity per play, one of which taste picks (Gumbel-max)
N_CANDIDATES = 8
#: sd of a user's preference for a context group, and for a single context
SIGMA_CONTEXT_GROUP = 1.0
SIGMA_CONTEXT = 0.5
#: mean plays per listening session (a session keeps its context with this probability)
SESSION_MEAN = 6.0
SESSION_KEEP_CONTEXT = 0.8

#: share of songs first released during the train days / the test days, their popularity boost
#: at release and its decay time in days
NEW_SONGS_TRAIN = 0.12
NEW_SONGS_TEST = 0.10
RELEASE_HYPE = 2.0
RELEASE_DECAY_DAYS = 10.0

#: names of the audible style dimensions, in the order of ``song_style.csv``
AUDIBLE_DIMS = ("brightness", "tempo", "rhythm_density", "pitch_height", "sustain", "noisiness")
#: number of hidden style dimensions
N_HIDDEN = 6

#: day 0 of the timeline; train covers days 0-61, test days 62-89
DAY0 = np.datetime64("2016-12-01")
TRAIN_DAYS = 62.0
TOTAL_DAYS = 90.0

#: audio clip format
AUDIO_SR = 16000
AUDIO_SECONDS = 3.0

# ---------------------------------------------------------------------------------------------
# the KKBox figures the world imitates (FACTS.md)
# ---------------------------------------------------------------------------------------------

#: user types as shares of members: train only, both, test only (cold)
USER_TYPE_SHARES = (9272 / 34403, 21483 / 34403, 3648 / 34403)
#: share of train rows of train-only users, share of test rows of cold users
TRAIN_ONLY_ROW_SHARE = 0.059
COLD_USER_ROW_SHARE = 0.072

# (source_system_tab, source_screen_name, source_type, share % of train rows, group);
# "" is an empty field; "*" marks contexts seen only in test
CONTEXTS: tuple[tuple[str, str, str, float, str], ...] = (
    ("my library", "Local playlist more", "local-library", 28.7, "library"),
    ("my library", "Local playlist more", "local-playlist", 13.8, "library"),
    ("my library", "Local playlist more", "online-playlist", 1.26, "library"),
    ("my library", "My library", "local-library", 0.9, "library"),
    ("my library", "My library_Search", "local-library", 0.09, "library"),
    ("my library", "", "local-library", 1.2, "library"),
    ("my library", "", "local-playlist", 0.8, "library"),
    ("my library", "Album more", "album", 1.0, "library"),
    ("my library", "Artist more", "top-hits-for-artist", 0.5, "library"),
    ("my library", "Online playlist more", "online-playlist", 1.7, "library"),
    ("discover", "Online playlist more", "online-playlist", 13.07, "discovery"),
    ("discover", "Discover Feature", "online-playlist", 3.29, "discovery"),
    ("discover", "Discover Feature", "my-daily-playlist", 0.01, "discovery"),
    ("discover", "Discover Chart", "online-playlist", 2.9, "discovery"),
    ("discover", "Discover Genre", "online-playlist", 1.1, "discovery"),
    ("discover", "Discover New", "online-playlist", 0.22, "discovery"),
    ("discover", "Album more", "album", 2.9, "discovery"),
    ("discover", "Artist more", "top-hits-for-artist", 2.2, "discovery"),
    ("discover", "", "song-based-playlist", 2.85, "discovery"),
    ("discover", "Others profile more", "online-playlist", 1.0, "social"),
    ("search", "Search", "song", 3.3, "discovery"),
    ("search", "Search", "online-playlist", 0.75, "discovery"),
    ("search", "Album more", "album", 1.8, "discovery"),
    ("search", "Artist more", "top-hits-for-artist", 1.56, "discovery"),
    ("search", "Artist more", "artist", 0.04, "discovery"),
    ("search", "Search Trends", "song", 0.18, "discovery"),
    ("search", "Search Home", "song", 0.18, "discovery"),
    ("search", "", "album", 0.64, "discovery"),
    ("radio", "Radio", "radio", 6.43, "radio"),
    ("radio", "", "radio", 0.03, "radio"),
    ("listen with", "Others profile more", "listen-with", 1.74, "social"),
    ("listen with", "Unknown", "listen-with", 0.73, "social"),
    ("listen with", "", "listen-with", 0.14, "social"),
    ("listen with", "", "online-playlist", 0.27, "social"),
    ("listen with", "People global", "listen-with", 0.3, "social*"),
    ("listen with", "People local", "listen-with", 0.15, "social*"),
    ("explore", "Explore", "online-playlist", 0.98, "discovery"),
    ("explore", "Online playlist more", "online-playlist", 1.15, "discovery"),
    ("explore", "", "topic-article-playlist", 0.15, "discovery"),
    ("notification", "Unknown", "song", 0.08, "discovery"),
    ("settings", "My library", "local-library", 0.03, "library"),
)

#: replay rate by value in the full train data (FACTS §3)
TAB_RATE = {
    "my library": 0.620,
    "discover": 0.416,
    "search": 0.421,
    "radio": 0.223,
    "listen with": 0.327,
    "explore": 0.422,
    "notification": 0.378,
    "settings": 0.591,
}
SCREEN_RATE = {
    "Local playlist more": 0.637,
    "Online playlist more": 0.415,
    "Radio": 0.217,
    "Album more": 0.391,
    "Search": 0.472,
    "Artist more": 0.417,
    "Discover Feature": 0.364,
    "Discover Chart": 0.517,
    "Others profile more": 0.313,
    "Discover Genre": 0.348,
    "My library": 0.657,
    "Explore": 0.448,
    "Unknown": 0.339,
    "Discover New": 0.456,
    "Search Trends": 0.377,
    "Search Home": 0.354,
    "My library_Search": 0.611,
    "People global": 0.35,
    "People local": 0.35,
    "": 0.47,
}
TYPE_RATE = {
    "local-library": 0.632,
    "online-playlist": 0.425,
    "local-playlist": 0.658,
    "radio": 0.220,
    "album": 0.393,
    "top-hits-for-artist": 0.419,
    "song": 0.437,
    "song-based-playlist": 0.380,
    "listen-with": 0.320,
    "topic-article-playlist": 0.494,
    "artist": 0.573,
    "my-daily-playlist": 0.376,
}
#: share of train rows: tab empty, tab literal "null", screen empty (all), type empty
MISSING_TAB = 0.00249
NULL_TAB = 0.00088
MISSING_SCREEN = 0.0562
MISSING_TYPE = 0.00292
TRAIN_TARGET_MEAN = 0.503517

#: song languages: code, share of songs, popularity multiplier (plays are mostly language 3)
LANGUAGES = (
    (52, 0.582, 0.45),
    (-1, 0.278, 0.2),
    (3, 0.046, 12.0),
    (17, 0.040, 0.9),
    (24, 0.018, 0.7),
    (31, 0.017, 5.0),
    (10, 0.007, 3.0),
    (45, 0.006, 0.05),
    (59, 0.0035, 0.1),
    (38, 0.001, 0.02),
)
#: ISRC country by language
ISRC_COUNTRY = {
    52: ("US", "GB", "DE", "FR"),
    -1: ("US", "GB", "DE", "JP", "TW"),
    3: ("TW", "TW", "TW", "HK", "CN"),
    17: ("JP",),
    24: ("HK", "TW"),
    31: ("KR",),
    10: ("TW", "CN"),
    45: ("TH",),
    59: ("TW",),
    38: ("ES", "MX"),
}
#: common genre ids first (FACTS §5), the remaining ones are made up
TOP_GENRES = (465, 958, 1609, 2022, 2122, 1259, 921, 1152, 786, 359, 139, 444, 458, 437, 2130)
N_GENRES = 191

#: members per city (FACTS §6)
CITIES = {
    1: 19445, 13: 3395, 5: 2634, 4: 1732, 15: 1525, 22: 1467, 6: 913, 14: 708, 12: 491, 9: 309,
    8: 289, 11: 285, 18: 259, 10: 216, 21: 213, 3: 204, 17: 152, 7: 93, 16: 35, 20: 27, 19: 11,
}  # fmt: skip
#: registered_via code and members
REGISTERED_VIA = {4: 11392, 7: 9433, 9: 8628, 3: 4879, 13: 70}
#: registrations per year up to 2016 (2017 handled apart)
REGISTRATION_YEARS = {
    2004: 67, 2005: 150, 2006: 250, 2007: 400, 2008: 600, 2009: 800, 2010: 1200, 2011: 3070,
    2012: 2300, 2013: 3102, 2014: 2900, 2015: 4679, 2016: 10203,
}  # fmt: skip


@dataclass(frozen=True)
class Scale:
    """Sizes of a world."""

    n_members: int
    n_songs: int
    n_train: int
    n_test: int
    n_artists: int
    #: sd of the log song popularity (long tail); smaller worlds are flatter, since a song can be
    #: played at most once per user
    sigma_popularity: float
    #: cap on a user's train rows as a multiple of the mean
    max_user_factor: float


SCALES = {
    "tiny": Scale(340, 600, 30_000, 10_400, 70, 1.0, 8.0),
    "demo": Scale(1_700, 2_000, 200_000, 69_300, 220, 1.3, 10.0),
    "full": Scale(34_403, 419_839, 7_377_418, 2_556_790, 45_000, 2.2, 23.0),
}

#: the full KKBox figures printed beside the world's
KKBOX = {
    "members": "34,403",
    "songs (train+test)": "419,839",
    "train rows": "7,377,418",
    "test rows": "2,556,790",
    "train users / test users": "30,755 / 25,131",
    "train songs / test songs": "359,966 / 224,753",
    "rows per user train / test": "239.9 / 101.7",
    "rows per song train / test": "20.5 / 11.4",
    "row-weighted user rows p25/p50/p75": "286 / 509 / 836",
    "cold test users (share of users)": "14.5 %",
    "cold test users (share of rows)": "7.2 %",
    "cold test songs (share of songs)": "26.6 %",
    "cold test songs (share of rows)": "12.5 %",
    "songs missing from songs.csv": "52 train / 14 test",
    "top 1 % songs: share of train rows": "55 %",
    "top 10 % songs: share of train rows": "86 %",
    "train target mean": "0.5035",
    "tab empty / null / screen empty / type empty": "0.25 / 0.09 / 5.62 / 0.29 %",
    "songs: genre / composer / lyricist / isrc empty": "4.1 / 46.7 / 84.7 / 5.9 %",
    "members: bd = 0 / gender empty": "57.9 / 57.9 %",
    "oracle AUC, validation tail": "(unknown)",
}


@dataclass
class Plays:
    """One array per column for the rows of both splits, in time order within each split."""

    user: np.ndarray
    song: np.ndarray
    split: np.ndarray  # 0 train, 1 test
    day: np.ndarray
    context: np.ndarray


@dataclass
class Members:
    """The users and what the taste model knows about them."""

    kind: np.ndarray  # 0 train only, 1 both, 2 test only
    n_train: np.ndarray
    n_test: np.ndarray
    window: np.ndarray  # shape (n_users, 2, 2): per split, first and last active day
    reg_day: np.ndarray  # registration, days since DAY0
    exp_day: np.ndarray  # expiration, days since DAY0
    city: np.ndarray
    bd: np.ndarray
    gender: np.ndarray
    via: np.ndarray
    bias: np.ndarray
    library_bias: np.ndarray
    taste: np.ndarray  # shape (n_users, n_style)
    context_logits: np.ndarray  # shape (n_users, n_contexts)


@dataclass
class Catalogue:
    """Artists and songs with their style, popularity and release day."""

    artist: np.ndarray  # artist index per song
    artist_bias: np.ndarray
    artist_language: np.ndarray
    various: int  # index of "Various Artists"
    style: np.ndarray  # shape (n_songs, n_style), audible dims first
    popularity: np.ndarray  # weight of a song among the candidates
    release_day: np.ndarray  # -inf for the back catalogue
    bias: np.ndarray


# ---------------------------------------------------------------------------------------------
# members
# ---------------------------------------------------------------------------------------------


def build_members(rng: np.random.Generator, scale: Scale) -> Members:
    """Draw the members: user type, activity, dates, profile, biases, taste, context habits."""
    n = scale.n_members

    # user types with exact counts, in random order
    counts = np.round(np.array(USER_TYPE_SHARES) * n).astype(int)
    counts[1] = n - counts[0] - counts[2]
    kind = rng.permutation(np.repeat(np.arange(3), counts))

    # registration: cold users mostly register in the test month, others up to 2017-01
    years = np.array(list(REGISTRATION_YEARS))
    year_p = np.array(list(REGISTRATION_YEARS.values()), dtype=float)
    year_p = np.append(year_p, 2573.0)  # 2017-01
    year_p /= year_p.sum()
    year = rng.choice(np.append(years, 2017), size=n, p=year_p)
    start = np.array([np.datetime64(f"{y}-01-01") for y in range(2004, 2018)])
    month = np.where(year == 2016, rng.choice(12, size=n, p=_month_weights_2016()), 0)
    month = np.where(year == 2017, 0, month)
    days_in = np.where(year == 2017, 31, 0)
    first = start[year - 2004] - DAY0
    reg_day = first.astype(int) + (month * 30.4).astype(int)
    reg_day = reg_day + np.where(days_in > 0, rng.integers(0, 31, size=n), rng.integers(0, 30, n))
    cold_feb = (kind == 2) & (rng.random(n) < 2109 / 3648)
    reg_day = np.where(cold_feb, 62 + rng.integers(0, 28, size=n), reg_day)
    reg_day = np.where(kind < 2, np.minimum(reg_day, 55), reg_day)
    reg_day[0] = -1711  # the earliest registration, 2004-03-26

    # expiration: mostly during 2017 with a September peak; churners expire around the timeline
    month_2017 = rng.choice(12, size=n, p=_month_weights_2017())
    exp_day = 31 + (month_2017 * 30.4).astype(int) + rng.integers(0, 30, size=n)
    later = rng.random(n) < 0.10
    exp_day = np.where(later, exp_day + rng.integers(365, 1400, size=n), exp_day)
    churn = (kind == 0) & (rng.random(n) < 0.7) | (rng.random(n) < 0.06)
    exp_day = np.where(churn, rng.integers(-120, 75, size=n), exp_day)
    exp_day = np.maximum(exp_day, reg_day + rng.integers(1, 8, size=n))

    # active windows per split
    window = np.zeros((n, 2, 2))
    first_day = np.clip(reg_day, 0, None).astype(float)
    window[:, 0, 0] = np.minimum(first_day, TRAIN_DAYS - 2)
    end = window[:, 0, 0] + (TRAIN_DAYS - window[:, 0, 0]) * rng.uniform(0.3, 1.0, size=n)
    window[:, 0, 1] = np.where(kind == 0, end, TRAIN_DAYS)
    window[:, 1, 0] = np.clip(first_day, TRAIN_DAYS, TOTAL_DAYS - 2)
    window[:, 1, 1] = TOTAL_DAYS

    # activity: lognormal, train-only and cold users lighter; exact totals per split
    activity = rng.lognormal(0.0, 0.85, size=n)
    n_train = _allocate(rng, activity, kind, 0, 1, TRAIN_ONLY_ROW_SHARE, scale.n_train, scale)
    test_activity = activity**0.9 * rng.lognormal(0.0, 0.5, size=n)
    n_test = _allocate(rng, test_activity, kind, 2, 1, COLD_USER_ROW_SHARE, scale.n_test, scale)
    n_test[kind == 0] = 0
    n_train[kind == 2] = 0

    # profile: about 58 % leave bd and gender empty, mostly in city 1
    blank = rng.random(n) < 0.579
    cities = np.array(list(CITIES))
    other_p = np.array(list(CITIES.values()), dtype=float)
    other_p[0] = 929.0
    city = rng.choice(cities, size=n, p=other_p / other_p.sum())
    city = np.where(blank & (rng.random(n) < 0.93), 1, city)
    age = np.round(rng.lognormal(np.log(27.0), 0.3, size=n)).astype(int)
    bd = np.where(blank & (rng.random(n) < 0.978), 0, np.clip(age, 7, 99))
    gender = np.where(rng.random(n) < 0.51, "male", "female").astype(object)
    gender[blank & (rng.random(n) < 0.978)] = ""
    via_codes = np.array(list(REGISTERED_VIA))
    via_p = np.array(list(REGISTERED_VIA.values()), dtype=float)
    via = rng.choice(via_codes, size=n, p=via_p / via_p.sum())

    # biases and taste
    bias = rng.normal(0.0, SIGMA_USER, size=n)
    library_bias = rng.normal(0.0, SIGMA_USER_LIBRARY, size=n)
    n_style = len(AUDIBLE_DIMS) + N_HIDDEN
    taste = rng.normal(size=(n, n_style)) * rng.lognormal(0.0, 0.25, size=(n, 1))

    # context habits: a preference per context group and per context
    groups = _context_groups()
    group_pref = rng.normal(0.0, SIGMA_CONTEXT_GROUP, size=(n, 4))
    share = np.array([c[3] for c in CONTEXTS]) / 100.0
    habits = group_pref[:, groups] + rng.normal(0.0, SIGMA_CONTEXT, size=(n, len(CONTEXTS)))

    # shift the common part until the row-weighted shares match KKBox's
    base = np.log(share)
    weight = (n_train + n_test) / max(1, int((n_train + n_test).sum()))
    for _ in range(8):
        z = base[None, :] + habits
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        base += np.log(share / np.maximum(weight @ p, 1e-12))
    context_logits = base[None, :] + habits

    return Members(
        kind=kind,
        n_train=n_train,
        n_test=n_test,
        window=window,
        reg_day=reg_day,
        exp_day=exp_day,
        city=city,
        bd=bd,
        gender=gender,
        via=via,
        bias=bias,
        library_bias=library_bias,
        taste=taste,
        context_logits=context_logits,
    )


def _month_weights_2016() -> np.ndarray:
    # registrations rise steeply after August 2016
    w = np.array([5, 5, 5, 5, 5, 5, 6, 12, 13, 13, 13, 13], dtype=float)
    return w / w.sum()


def _month_weights_2017() -> np.ndarray:
    # expirations peak in September 2017
    w = np.array([6, 5, 5, 5, 5, 5, 6, 8, 41, 20, 4, 4], dtype=float)
    return w / w.sum()


def _allocate(
    rng: np.random.Generator,
    activity: np.ndarray,
    kind: np.ndarray,
    light_kind: int,
    main_kind: int,
    light_share: float,
    total: int,
    scale: Scale,
) -> np.ndarray:
    """Rows per user of one split: exact total, at least one row per active user, capped tail."""
    counts = np.zeros(len(kind), dtype=np.int64)
    n_light = int(round(total * light_share))
    for k, n_rows in ((light_kind, n_light), (main_kind, total - n_light)):
        idx = np.flatnonzero(kind == k)
        if len(idx) == 0:
            continue
        w = activity[idx] / activity[idx].sum()
        cap = int(min(scale.max_user_factor * n_rows / len(idx), 0.4 * scale.n_songs))
        extra = np.minimum(rng.multinomial(n_rows - len(idx), w), cap - 1)

        # what the cap removed goes to the others, in proportion to their activity
        for _ in range(50):
            short = n_rows - len(idx) - int(extra.sum())
            room = extra < cap - 1
            if short <= 0 or not room.any():
                break
            more = rng.multinomial(short, np.where(room, w, 0.0) / w[room].sum())
            extra = np.minimum(extra + more, cap - 1)
        counts[idx] = 1 + extra
    return counts


def _context_groups() -> np.ndarray:
    names = ["library", "discovery", "radio", "social"]
    return np.array([names.index(c[4].rstrip("*")) for c in CONTEXTS])


# ---------------------------------------------------------------------------------------------
# catalogue
# ---------------------------------------------------------------------------------------------


def build_catalogue(rng: np.random.Generator, scale: Scale) -> Catalogue:
    """Draw artists and songs: style, popularity, release day and the song's replay bias."""
    n_songs, n_artists = scale.n_songs, scale.n_artists
    n_style = len(AUDIBLE_DIMS) + N_HIDDEN

    # artists: heavy-tailed sizes; artist 0 is "Various Artists"
    lang_codes = np.array([x[0] for x in LANGUAGES])
    lang_share = np.array([x[1] for x in LANGUAGES])
    lang_mult = np.array([x[2] for x in LANGUAGES])
    artist_language = rng.choice(len(LANGUAGES), size=n_artists, p=lang_share / lang_share.sum())
    artist_language[0] = 1  # "Various Artists" mostly unknown language
    size_w = rng.pareto(1.1, size=n_artists) + 0.3
    size_w[0] = 0.0
    size_w = size_w / size_w.sum() * 0.96
    size_w[0] = 0.04
    artist = rng.choice(n_artists, size=n_songs, p=size_w)
    artist[:n_artists] = np.arange(n_artists) if n_songs >= n_artists else artist[:n_artists]
    artist = rng.permutation(artist)
    artist_bias = rng.normal(0.0, SIGMA_ARTIST, size=n_artists)
    artist_bias[0] = 0.0

    # style: part shared with the artist, part the song's own
    artist_style = rng.normal(size=(n_artists, n_style))
    own = rng.normal(size=(n_songs, n_style))
    shared = np.where((artist == 0)[:, None], 0.0, artist_style[artist])
    share = np.where(artist == 0, 0.0, ARTIST_STYLE_SHARE)[:, None]
    style = np.sqrt(share) * shared + np.sqrt(1.0 - share) * own

    # popularity: long tail, artist fame and language
    artist_fame = rng.lognormal(0.0, 0.6 * scale.sigma_popularity, size=n_artists)
    popularity = (
        rng.lognormal(0.0, 0.8 * scale.sigma_popularity, size=n_songs)
        * artist_fame[artist]
        * lang_mult[artist_language[artist]]
    )

    # release day: most songs are back catalogue, some come out during train or test days
    u = rng.random(n_songs)
    release_day = np.full(n_songs, -np.inf)
    in_train = u < NEW_SONGS_TRAIN
    in_test = (u >= NEW_SONGS_TRAIN) & (u < NEW_SONGS_TRAIN + NEW_SONGS_TEST)
    release_day[in_train] = rng.uniform(0.0, TRAIN_DAYS, size=int(in_train.sum()))
    release_day[in_test] = rng.uniform(TRAIN_DAYS, TOTAL_DAYS - 1, size=int(in_test.sum()))

    # replay bias: popular songs are replayed more
    z_pop = np.log(popularity)
    z_pop = (z_pop - z_pop.mean()) / z_pop.std()
    bias = SONG_POPULARITY_EFFECT * z_pop + rng.normal(0.0, SIGMA_SONG, size=n_songs)

    del lang_codes
    return Catalogue(
        artist=artist,
        artist_bias=artist_bias,
        artist_language=artist_language,
        various=0,
        style=style,
        popularity=popularity,
        release_day=release_day,
        bias=bias,
    )


def affinity(taste: np.ndarray, style: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """Weighted taste . style, scaled to unit variance for standard normal inputs.

    Parameters
    ----------
    taste : np.ndarray [shape=(..., n_style)]
    style : np.ndarray [shape=(..., n_style)]
        Broadcastable against ``taste``; audible dims first.
    weights : tuple of float
        Weight of the audible dims and of the hidden dims.

    Returns
    -------
    np.ndarray [shape=(...)]
    """
    k_a = len(AUDIBLE_DIMS)
    w = np.concatenate([np.full(k_a, weights[0]), np.full(style.shape[-1] - k_a, weights[1])])
    norm = np.sqrt(np.sum(w**2))
    return np.einsum("...k,...k->...", taste * w, style) / norm


# ---------------------------------------------------------------------------------------------
# plays
# ---------------------------------------------------------------------------------------------


def draw_plays(rng: np.random.Generator, members: Members, cat: Catalogue) -> Plays:
    """Draw every play: user, split, day, context and song, with unique (user, song) pairs.

    Each (user, split) group needs its row count. Rows are drawn with some surplus, repeated
    pairs are dropped (the earliest play is kept), each group keeps a random subset of its
    size, and groups left short are drawn again.
    """
    n_users = len(members.kind)
    need = np.concatenate([members.n_train, members.n_test])  # group g = split * n_users + user
    kept: list[Plays] = []
    kept_pairs = np.zeros(0, dtype=np.int64)
    have = np.zeros(2 * n_users, dtype=np.int64)
    n_songs = len(cat.popularity)

    for attempt in range(8):
        short = need - have
        if short.sum() == 0:
            break
        factor = 1.25 if attempt == 0 else 1.0 + attempt
        ask = np.where(short > 0, np.ceil(short * factor).astype(np.int64) + 2, 0)
        batch = _draw_batch(rng, members, cat, ask)

        # drop pairs already kept, then repeats within the batch (earliest kept)
        order = np.argsort(batch.day, kind="stable")
        batch = _take(batch, order)
        pairs = batch.user.astype(np.int64) * n_songs + batch.song
        fresh = ~np.isin(pairs, kept_pairs)
        _, first = np.unique(pairs, return_index=True)
        unique = np.zeros(len(pairs), dtype=bool)
        unique[first] = True
        batch = _take(batch, np.flatnonzero(fresh & unique))

        # each group keeps a random subset of what it still needs
        group = batch.split.astype(np.int64) * n_users + batch.user
        order = np.lexsort((rng.random(len(group)), group))
        g_sorted = group[order]
        starts = np.searchsorted(g_sorted, np.arange(2 * n_users))
        rank = np.arange(len(g_sorted)) - starts[g_sorted]
        keep = order[rank < short[g_sorted]]
        batch = _take(batch, np.sort(keep))
        kept.append(batch)
        kept_pairs = np.concatenate(
            [kept_pairs, batch.user.astype(np.int64) * n_songs + batch.song]
        )
        kept_pairs.sort()
        have += np.bincount(
            batch.split.astype(np.int64) * n_users + batch.user, minlength=2 * n_users
        )

    # groups still short: popular songs are used up, so pick among the user's unplayed ones
    short = need - have
    if short.sum() > 0:
        batch = _draw_batch(rng, members, cat, short)
        batch.song = _unplayed(rng, cat, batch.user, kept_pairs)
        kept.append(batch)

    # stitch together, time order within each split
    plays = Plays(
        user=np.concatenate([p.user for p in kept]),
        song=np.concatenate([p.song for p in kept]),
        split=np.concatenate([p.split for p in kept]),
        day=np.concatenate([p.day for p in kept]),
        context=np.concatenate([p.context for p in kept]),
    )
    return _take(plays, np.lexsort((plays.day, plays.split)))


def _unplayed(
    rng: np.random.Generator, cat: Catalogue, user: np.ndarray, kept_pairs: np.ndarray
) -> np.ndarray:
    """For each row, a back-catalogue song its user has not played (popularity-weighted)."""
    n_songs = len(cat.popularity)
    song = np.empty(len(user), dtype=np.int32)
    back = np.flatnonzero(~np.isfinite(cat.release_day))
    for u in np.unique(user):
        rows = np.flatnonzero(user == u)
        lo, hi = np.searchsorted(kept_pairs, [u * n_songs, (u + 1) * n_songs])
        free = np.setdiff1d(back, kept_pairs[lo:hi] - u * n_songs)
        w = cat.popularity[free]
        song[rows] = rng.choice(free, size=len(rows), replace=False, p=w / w.sum())
    return song


def _take(p: Plays, idx: np.ndarray) -> Plays:
    return Plays(p.user[idx], p.song[idx], p.split[idx], p.day[idx], p.context[idx])


def _draw_batch(
    rng: np.random.Generator, members: Members, cat: Catalogue, ask: np.ndarray
) -> Plays:
    """Draw ``ask[g]`` plays for every group g (repeats allowed): sessions, contexts, songs."""
    n_users = len(members.kind)
    n_groups = len(ask)
    g_user = np.arange(n_groups) % n_users
    g_split = np.arange(n_groups) // n_users

    # rows in sessions of random length; a session has a start day inside the user's window
    n_rows = int(ask.sum())
    row_group = np.repeat(np.arange(n_groups), ask)
    offsets = np.concatenate([[0], np.cumsum(ask)[:-1]])
    k = np.arange(n_rows) - offsets[row_group]
    sess_len = 1 + rng.poisson(SESSION_MEAN - 1.0, size=n_groups)
    n_sess = (ask + sess_len - 1) // sess_len
    sess_offsets = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
    sess_id = sess_offsets[row_group] + k // sess_len[row_group]
    sess_group = np.repeat(np.arange(n_groups), n_sess)
    lo = members.window[g_user, g_split, 0]
    hi = members.window[g_user, g_split, 1]
    sess_day = lo[sess_group] + rng.random(len(sess_group)) * (hi - lo)[sess_group]
    day = sess_day[sess_id] + (k % sess_len[row_group]) * 0.002
    day = np.minimum(day, hi[row_group] - 1e-4)

    # context: one per session, sometimes changed within the session
    sess_ctx = _draw_contexts(rng, members, g_user[sess_group], g_split[sess_group])
    ctx = sess_ctx[sess_id]
    switch = np.flatnonzero(rng.random(n_rows) > SESSION_KEEP_CONTEXT)
    ctx[switch] = _draw_contexts(
        rng, members, g_user[row_group[switch]], g_split[row_group[switch]]
    )

    # songs, one day at a time (releases and their hype change daily)
    user = g_user[row_group].astype(np.int32)
    song = _draw_songs(rng, members, cat, user, day, ctx)
    split = g_split[row_group].astype(np.int8)
    return Plays(user=user, song=song, split=split, day=day, context=ctx)


def _draw_contexts(
    rng: np.random.Generator, members: Members, user: np.ndarray, split: np.ndarray
) -> np.ndarray:
    """One context index per entry by the user's habits (test-only contexts only in test)."""
    test_only = np.array([c[4].endswith("*") for c in CONTEXTS])
    out = np.empty(len(user), dtype=np.int16)
    for lo in range(0, len(user), 200_000):
        u = user[lo : lo + 200_000]
        s = split[lo : lo + 200_000]
        lg = members.context_logits[u]
        lg = np.where(test_only[None, :] & (s[:, None] == 0), -np.inf, lg)
        g = lg + rng.gumbel(size=lg.shape)
        out[lo : lo + 200_000] = np.argmax(g, axis=1)
    return out


def _draw_songs(
    rng: np.random.Generator,
    members: Members,
    cat: Catalogue,
    user: np.ndarray,
    day: np.ndarray,
    ctx: np.ndarray,
) -> np.ndarray:
    """Candidates by popularity among released songs, then taste picks one (Gumbel-max)."""
    song = np.empty(len(user), dtype=np.int32)
    groups = _context_groups()
    names = ["library", "discovery", "radio", "social"]
    gamma = np.array([CHOICE_TASTE[n] for n in names])[groups[ctx]]
    new = np.flatnonzero(np.isfinite(cat.release_day))
    day_idx = np.floor(day).astype(np.int64)
    order = np.argsort(day_idx, kind="stable")
    bounds = np.searchsorted(day_idx[order], np.arange(int(TOTAL_DAYS) + 1))

    for d in range(int(TOTAL_DAYS)):
        rows = order[bounds[d] : bounds[d + 1]]
        if len(rows) == 0:
            continue

        # today's weights: released songs, new ones boosted by their hype
        w = cat.popularity.copy()
        age = d + 0.5 - cat.release_day[new]
        w[new] = np.where(
            age >= 0,
            w[new] * (1.0 + RELEASE_HYPE * np.exp(-np.clip(age, 0, None) / RELEASE_DECAY_DAYS)),
            0.0,
        )
        cum = np.cumsum(w)

        for lo in range(0, len(rows), 100_000):
            r = rows[lo : lo + 100_000]
            cand = np.searchsorted(cum, rng.random((len(r), N_CANDIDATES)) * cum[-1], side="right")
            cand = np.minimum(cand, len(cum) - 1)
            aff = affinity(members.taste[user[r]][:, None, :], cat.style[cand], CHOICE_WEIGHTS)
            score = gamma[r][:, None] * aff + rng.gumbel(size=cand.shape)
            song[r] = cand[np.arange(len(r)), np.argmax(score, axis=1)]
    return song


# ---------------------------------------------------------------------------------------------
# the taste model
# ---------------------------------------------------------------------------------------------


def true_probability(members: Members, cat: Catalogue, plays: Plays) -> np.ndarray:
    """p_true of every play; context effects are calibrated to the KKBox replay rates."""
    u, s = plays.user, plays.song

    # everything but the context
    is_library = _context_groups()[plays.context] == 0
    rest = members.bias[u] + np.where(is_library, members.library_bias[u], 0.0)
    rest = rest + cat.bias[s] + cat.artist_bias[cat.artist[s]]
    aff = np.empty(len(u))
    for lo in range(0, len(u), 500_000):
        sl = slice(lo, lo + 500_000)
        aff[sl] = affinity(members.taste[u[sl]], cat.style[s[sl]], REPLAY_WEIGHTS)
    rest = rest + TASTE_EFFECT * aff
    rest = rest + drift(plays.day)
    rest = rest + NEW_MEMBER_EFFECT * (members.reg_day[u] >= 0)
    rest = rest + EXPIRING_MEMBER_EFFECT * (members.exp_day[u] < 90)
    rest = rest + VIA4_EFFECT * (members.via[u] == 4)

    # context effects: start from the KKBox rates, then match them on the train rows
    target = np.array([_context_rate(c) for c in CONTEXTS])
    effect = logit(target)
    train = plays.split == 0
    n_ctx = np.bincount(plays.context[train], minlength=len(CONTEXTS))
    for _ in range(4):
        p = expit(rest[train] + effect[plays.context[train]])
        mean = np.bincount(plays.context[train], weights=p, minlength=len(CONTEXTS))
        seen = n_ctx > 0
        mean = np.where(seen, mean / np.maximum(n_ctx, 1), target)
        effect = effect + np.where(seen, logit(target) - logit(np.clip(mean, 1e-4, 1 - 1e-4)), 0)

    # one overall shift to the KKBox target mean
    z = rest + effect[plays.context]
    shift = 0.0
    for _ in range(6):
        p = expit(z[train] + shift)
        shift += (TRAIN_TARGET_MEAN - p.mean()) / max(float((p * (1 - p)).mean()), 1e-3)
    return expit(z + shift)


def drift(day: np.ndarray) -> np.ndarray:
    """Time drift on the logit scale: linear over the timeline plus a slow wave."""
    return DRIFT_LINEAR * (day / TOTAL_DAYS - 0.5) + DRIFT_WAVE * np.sin(2 * np.pi * day / 21.0)


def _context_rate(c: tuple[str, str, str, float, str]) -> float:
    tab, screen, kind = c[0], c[1], c[2]
    z = (logit(TAB_RATE[tab]) + logit(SCREEN_RATE[screen]) + logit(TYPE_RATE[kind])) / 3.0
    return float(expit(z))


# ---------------------------------------------------------------------------------------------
# names, metadata and file writing
# ---------------------------------------------------------------------------------------------

_LATIN = "ka lo mi ra ve no sa ti lu ben dor el fin gar hal is jon ker lam mor nel or pax qui ros"
_LATIN_SYL = _LATIN.split()
_CJK = "林欣彤曲婉婷張信哲周杰倫王菲陳奕迅蔡依林孫燕姿劉德華梁靜茹五月天田馥甄李宗盛羅大佑伍佰吳青峰楊丞琳"
_WORDS = (
    "love night rain heart sky dream blue fire home time light summer road moon star song "
    "river stay gold wild slow young city dance ocean hello again forever tonight morning"
).split()
_CJK_WORDS = (
    "我們 愛 原諒我 如果 再見 夜空 晴天 告白 回家 想你 溫柔 時光 星星 海 雨 光 夢 路".split()
)
_JP = "さくらの夢ありがとう君に会いたい"
_HANGUL = "사랑해너와나우리의밤별"


def make_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct 44-character base64 ids (32 random bytes, ending in ``=``).

    Parameters
    ----------
    rng : np.random.Generator
    n : int

    Returns
    -------
    np.ndarray [shape=(n,)], object
    """
    raw = rng.bytes(32 * n)
    ids = np.array([base64.b64encode(raw[32 * i : 32 * i + 32]).decode() for i in range(n)])
    if len(set(ids.tolist())) != n:  # pragma: no cover - 256-bit collisions
        raise RuntimeError("id collision; rerun with another seed")
    return ids.astype(object)


def _latin_name(rng: np.random.Generator, words: int) -> str:
    parts = []
    for _ in range(words):
        syl = rng.choice(_LATIN_SYL, size=int(rng.integers(2, 4)))
        parts.append("".join(syl).capitalize())
    return " ".join(parts)


def _cjk(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(rng.choice(list(alphabet), size=n))


def artist_names(rng: np.random.Generator, language: np.ndarray) -> np.ndarray:
    """Artist names styled by language; index 0 is "Various Artists"."""
    codes = np.array([x[0] for x in LANGUAGES])[language]
    names = []
    for i, code in enumerate(codes):
        if i == 0:
            names.append("Various Artists")
        elif code in (3, 10, 24, 59):
            name = _cjk(rng, _CJK, int(rng.integers(2, 4)))
            if rng.random() < 0.5:
                name += f" ({_latin_name(rng, 2)})"
            names.append(name)
        elif code == 17:
            names.append(_cjk(rng, _JP, int(rng.integers(2, 6))))
        elif code == 31:
            names.append(
                _latin_name(rng, 1).upper() if rng.random() < 0.7 else _cjk(rng, _HANGUL, 3)
            )
        elif rng.random() < 0.2:
            names.append("The " + _latin_name(rng, 1) + "s")
        else:
            names.append(_latin_name(rng, int(rng.integers(1, 3))))
    return np.array(names, dtype=object)


def song_table(
    rng: np.random.Generator, cat: Catalogue, song_ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``songs.csv`` and ``song_extra_info.csv`` rows for every song, in catalogue order."""
    n_songs, n_artists = len(song_ids), len(cat.artist_bias)
    codes = np.array([x[0] for x in LANGUAGES])
    language = codes[cat.artist_language[cat.artist]]
    artists = artist_names(rng, cat.artist_language)

    # song length in ms: lognormal around 227 s with a few absurd ones
    length = np.round(rng.lognormal(np.log(226_627), 0.31, size=n_songs)).astype(np.int64)
    odd = rng.choice(n_songs, size=max(2, n_songs // 2000), replace=False)
    length[odd] = np.where(
        rng.random(len(odd)) < 0.5, rng.integers(185, 30_000, len(odd)), 12_173_850
    )

    # genres: Zipf over 191 ids, mostly the artist's, sometimes two or three, 4.1 % empty
    made_up = np.setdiff1d(rng.choice(np.arange(100, 2300), size=400, replace=False), TOP_GENRES)
    genre_ids = np.concatenate([TOP_GENRES, made_up[: N_GENRES - len(TOP_GENRES)]])
    gp = 1.0 / (np.arange(N_GENRES) + 1.0) ** 1.1
    gp[0] *= 1.6
    gp /= gp.sum()
    artist_genre = rng.choice(N_GENRES, size=n_artists, p=gp)
    first = np.where(rng.random(n_songs) < 0.85, artist_genre[cat.artist], -1)
    first = np.where(first < 0, rng.choice(N_GENRES, size=n_songs, p=gp), first)
    second = rng.choice(N_GENRES, size=n_songs, p=gp)
    third = rng.choice(N_GENRES, size=n_songs, p=gp)
    u = rng.random(n_songs)
    genre = []
    for i in range(n_songs):
        parts = [genre_ids[first[i]]]
        if u[i] > 0.90 and second[i] != first[i]:
            parts.append(genre_ids[second[i]])
        if u[i] > 0.985 and third[i] not in (first[i], second[i]):
            parts.append(genre_ids[third[i]])
        genre.append("|".join(str(g) for g in parts))
    genre_col = np.array(genre, dtype=object)
    genre_col[rng.random(n_songs) < 0.041] = ""

    # composers and lyricists: each artist has a few writers; many songs leave them empty
    pool = np.array([_latin_name(rng, 2) for _ in range(max(50, n_artists // 2))], dtype=object)
    pool_cjk = np.array([_cjk(rng, _CJK, 3) for _ in range(max(50, n_artists // 2))], dtype=object)
    cjk_lang = np.isin(language, (3, 10, 24, 59))
    writer = np.where(cjk_lang, pool_cjk[cat.artist % len(pool_cjk)], pool[cat.artist % len(pool)])
    co_writer = np.where(cjk_lang, rng.choice(pool_cjk, n_songs), rng.choice(pool, n_songs))
    composer = writer.copy()
    two = rng.random(n_songs) < 0.15
    composer[two] = composer[two] + "| " + co_writer[two]
    composer[rng.random(n_songs) < 0.0027] = "佚名"
    composer[rng.random(n_songs) < 0.4665] = ""
    lyricist = np.where(rng.random(n_songs) < 0.5, writer, co_writer).astype(object)
    lyricist[rng.random(n_songs) < 0.8471] = ""
    artist_col = artists[cat.artist]

    # song names, some CJK
    w1 = rng.choice(np.array(_WORDS, dtype=object), n_songs)
    w2 = rng.choice(np.array(_WORDS, dtype=object), n_songs)
    c1 = rng.choice(np.array(_CJK_WORDS, dtype=object), n_songs)
    c2 = rng.choice(np.array(_CJK_WORDS, dtype=object), n_songs)
    name = np.where(
        cjk_lang, c1 + c2, np.char.capitalize(w1.astype(str)).astype(object) + " " + w2
    ).astype(object)

    # U+00A0 inside or after a few names, like the real files
    for col in (artist_col, composer, name):
        nb = rng.choice(n_songs, size=max(1, round(0.0007 * n_songs)), replace=False)
        for i in nb:
            text = col[i] or "Lam"
            col[i] = text.replace(" ", "\u00a0", 1) if " " in text else text + "\u00a0"

    # ISRC: country by language, a registrant, the year, a serial; 5.95 % empty
    year = np.where(
        np.isfinite(cat.release_day),
        np.where(cat.release_day >= 31, 17, 16),
        np.clip(np.round(116 - rng.exponential(6.0, n_songs)), 70, 116).astype(int) % 100,
    )
    isrc = []
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    reg = rng.choice(letters, size=(n_songs, 3))
    serial = rng.integers(0, 100_000, n_songs)
    for i in range(n_songs):
        countries = ISRC_COUNTRY[int(language[i])]
        cc = countries[int(rng.integers(len(countries)))]
        isrc.append(f"{cc}{''.join(reg[i])}{year[i]:02d}{serial[i]:05d}")
    isrc_col = np.array(isrc, dtype=object)
    isrc_col[rng.random(n_songs) < 0.0595] = ""

    songs = pd.DataFrame(
        {
            "song_id": song_ids,
            "song_length": length,
            "genre_ids": genre_col,
            "artist_name": artist_col,
            "composer": composer,
            "lyricist": lyricist,
            "language": language,
        }
    )
    extra = pd.DataFrame({"song_id": song_ids, "name": name, "isrc": isrc_col})
    return songs, extra


def member_table(rng: np.random.Generator, members: Members, msno: np.ndarray) -> pd.DataFrame:
    """``members.csv`` with the quirks of the real file (bd 0 and absurd, 19700101 once)."""
    n = len(msno)
    bd = members.bd.copy()

    # absurd ages: a few negative, a few above 100, a few in 1-6
    for lo, hi, share in ((-45, -30, 2 / 34403), (101, 1052, 22 / 34403), (1, 7, 4 / 34403)):
        idx = rng.choice(n, size=max(1, round(share * n)), replace=False)
        bd[idx] = rng.integers(lo, hi, size=len(idx))

    reg = (DAY0 + members.reg_day.astype("timedelta64[D]")).astype("datetime64[D]")
    exp = (DAY0 + members.exp_day.astype("timedelta64[D]")).astype("datetime64[D]")
    reg_int = _date_int(reg)
    exp_int = _date_int(exp)
    exp_int[int(rng.integers(n))] = 19700101
    via = members.via.copy()
    via[int(np.flatnonzero(members.kind == 2)[0]) if (members.kind == 2).any() else 0] = 16
    return pd.DataFrame(
        {
            "msno": msno,
            "city": members.city,
            "bd": bd,
            "gender": members.gender,
            "registered_via": via,
            "registration_init_time": reg_int,
            "expiration_date": exp_int,
        }
    )


def _date_int(d: np.ndarray) -> np.ndarray:
    s = np.datetime_as_string(d, unit="D")
    return np.char.replace(s, "-", "").astype(np.int64)


def context_columns(
    rng: np.random.Generator, context: np.ndarray, split: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three source columns of every play, with empty fields and the literal ``null``."""
    n = len(context)
    tab = np.array([c[0] for c in CONTEXTS], dtype=object)[context]
    screen = np.array([c[1] for c in CONTEXTS], dtype=object)[context]
    kind = np.array([c[2] for c in CONTEXTS], dtype=object)[context]

    # logging gaps, a little rarer in test for the tab (FACTS §3)
    base_empty = float(np.mean(screen[split == 0] == "")) if (split == 0).any() else 0.0
    extra_screen = max(0.0, (MISSING_SCREEN - base_empty) / (1.0 - base_empty))
    u = rng.random((n, 4))
    test = split == 1
    tab[u[:, 0] < np.where(test, 0.00199, MISSING_TAB)] = ""
    tab[(u[:, 0] >= 0.9) & (u[:, 0] < 0.9 + NULL_TAB)] = "null"
    screen[u[:, 1] < np.where(test, extra_screen * 1.15, extra_screen)] = ""
    kind[u[:, 2] < MISSING_TYPE] = ""
    return tab, screen, kind


def write_csv(df: pd.DataFrame, path: Path, *, chunk: int = 500_000) -> None:
    """Write ``df`` in chunks (empty strings stay empty fields)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        for lo in range(0, max(len(df), 1), chunk):
            df.iloc[lo : lo + chunk].to_csv(
                f, index=False, header=lo == 0, lineterminator="\n", float_format="%.6f"
            )


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------

_SCALES = (
    (0, 2, 4, 5, 7, 9, 11),
    (0, 2, 3, 5, 7, 8, 10),
    (0, 2, 4, 7, 9),
    (0, 3, 5, 7, 10),
    (0, 2, 3, 5, 7, 9, 10),
)


def render_clip(style: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthesize a 3 s, 16 kHz mono clip from a song's audible style.

    Every audible dimension moves a synthesis parameter continuously (through the normal CDF):
    brightness the harmonic roll-off and the noise cut-off, tempo the beat rate, rhythm density
    the notes per beat and the percussion, pitch height the register, sustain the note decay and
    noisiness the breath noise and inharmonicity. The melody, scale, timbre details, bass line
    and levels are random per song.

    Parameters
    ----------
    style : np.ndarray [shape=(len(AUDIBLE_DIMS),)]
        The song's audible style (standard normal per dimension).
    rng : np.random.Generator
        The song's own generator.

    Returns
    -------
    np.ndarray [shape=(48000,)], float32
    """
    sr = AUDIO_SR
    n = int(AUDIO_SECONDS * sr)
    t = np.arange(n) / sr
    q = ndtr(np.asarray(style, dtype=float))  # each in (0, 1)
    bright, tempo, density, pitch, sustain, noisy = q

    # rhythm: beat from tempo, note grid from density, both with small random detuning
    bpm = 60.0 + 110.0 * tempo * rng.uniform(0.95, 1.05)
    beat = 60.0 / bpm
    step = beat / (2.0 ** (-1.0 + 3.0 * density)) * rng.uniform(0.93, 1.07)
    n_steps = int(np.ceil(AUDIO_SECONDS / step)) + 1
    lengths = rng.choice([1, 1, 1, 2, 2, 3], size=n_steps)
    onsets = np.concatenate([[0.0], np.cumsum(lengths * step)])[:n_steps]
    onsets = onsets[onsets < AUDIO_SECONDS] + rng.uniform(0, 0.05)
    onsets = np.concatenate([[0.0], onsets])

    # melody: random walk on a random scale around the register
    scale = np.array(_SCALES[int(rng.integers(len(_SCALES)))])
    root = 40.0 + 40.0 * pitch + rng.normal(0.0, 1.0)
    degree = np.cumsum(rng.integers(-2, 3, size=len(onsets)))
    degree = np.clip(degree, -6, 6)
    midi = root + scale[degree % len(scale)] + 12 * (degree // len(scale))
    freq_note = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
    note = np.clip(np.searchsorted(onsets, t, side="right") - 1, 0, len(onsets) - 1)
    since = t - onsets[note]
    vib = 1.0 + rng.uniform(0.0, 0.006) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    freq = freq_note[note] * vib
    phase = 2 * np.pi * np.cumsum(freq) / sr

    # harmonics: roll-off from brightness, random odd/even balance; noisiness adds a detuned
    # second voice (roughness) on top of the breath noise below
    h = np.arange(1, 17)
    rolloff = 2.6 - 1.9 * bright
    amp = h ** (-rolloff) * np.where(h % 2 == 0, rng.uniform(0.3, 1.0), 1.0)
    detune = 1.0 + (0.002 + 0.025 * noisy) * rng.uniform(0.7, 1.3)
    tone = _harmonic_tone(phase, freq, amp) + noisy * _harmonic_tone(phase * detune, freq, amp)

    # note envelope: attack, then a decay whose time follows sustain
    decay = 0.04 * (25.0**sustain) * rng.uniform(0.8, 1.25)
    attack = rng.uniform(0.003, 0.03)
    env = np.minimum(since / attack, 1.0) * np.exp(-since / decay)
    voice = tone * env

    # bass on the beats, random level
    bass_f = 440.0 * 2.0 ** ((root - 24.0 - 69.0) / 12.0)
    beat_since = t % beat
    bass = np.sin(2 * np.pi * bass_f * t) * np.exp(-beat_since / (0.5 * beat + 0.05))
    voice = voice + rng.uniform(0.0, 0.5) * bass

    # percussion: noise hits on a grid from density, coloured by brightness
    hit_step = beat / (1.0 + 3.0 * density)
    hit_since = t % hit_step
    noise = rng.normal(size=n)
    alpha = np.exp(-2 * np.pi * (300.0 * 20.0**bright) / sr)
    coloured = _one_pole(noise, alpha)
    perc = coloured * np.exp(-hit_since / 0.03) * (0.2 + 1.2 * density)
    kick = np.sin(2 * np.pi * 55.0 * beat_since * (1 + 3 * np.exp(-beat_since / 0.02)))
    kick *= np.exp(-beat_since / 0.12) * rng.uniform(0.2, 0.8)

    # breath noise from noisiness, a quiet floor, then mix and normalise
    breath = _one_pole(rng.normal(size=n), alpha) * env * (1.5 * noisy)
    y = voice / (np.abs(voice).max() + 1e-9)
    y = y + 0.35 * perc / (np.abs(perc).max() + 1e-9) + 0.4 * kick
    y = y + 0.5 * breath / (np.abs(breath).max() + 1e-9) * noisy + 0.003 * rng.normal(size=n)
    y = y / (np.abs(y).max() + 1e-9) * rng.uniform(0.4, 0.9)
    return y.astype(np.float32)


def _harmonic_tone(phase: np.ndarray, freq: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Sum of ``amp[k] * sin((k + 1) * phase)`` by the Chebyshev recurrence, below Nyquist."""
    c2 = 2.0 * np.cos(phase)
    prev, cur = np.zeros_like(phase), np.sin(phase)
    tone = amp[0] * cur
    limit = 0.45 * AUDIO_SR / freq  # highest harmonic number without aliasing, per sample
    for k in range(2, len(amp) + 1):
        prev, cur = cur, c2 * cur - prev
        tone += np.where(k < limit, amp[k - 1], 0.0) * cur
    return tone


def _one_pole(x: np.ndarray, alpha: float) -> np.ndarray:
    """One-pole low-pass ``y[n] = (1 - alpha) x[n] + alpha y[n-1]``."""
    from scipy.signal import lfilter

    out: np.ndarray = lfilter([1.0 - alpha], [1.0, -alpha], x)
    return out


def _render_chunk(job: tuple[int, list[int], np.ndarray, str]) -> int:
    """Render and write the clips of one chunk (a worker task)."""
    import soundfile as sf

    seed, rows, styles, folder = job
    for row, style in zip(rows, styles, strict=True):
        y = render_clip(style, np.random.default_rng([seed, 99, row]))
        sf.write(os.path.join(folder, f"{row:07d}.flac"), y, AUDIO_SR, subtype="PCM_16")
    return len(rows)


def render_audio(
    out: Path, song_ids: np.ndarray, styles: np.ndarray, *, seed: int, workers: int
) -> None:
    """Render one clip per song into ``out`` and write ``out/manifest.csv``.

    Parameters
    ----------
    out : Path
        Audio folder (created).
    song_ids : np.ndarray [shape=(n_songs,)]
        Song ids in ``songs.csv`` order; clip names are the row numbers.
    styles : np.ndarray [shape=(n_songs, len(AUDIBLE_DIMS))]
    seed : int
        World seed; each clip has its own generator from (seed, row).
    workers : int
        Processes that render in parallel.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows = list(range(len(song_ids)))
    jobs = [
        (seed, rows[lo : lo + 64], styles[lo : lo + 64], str(out)) for lo in range(0, len(rows), 64)
    ]
    bar = tqdm(total=len(rows), desc="audio", unit="clip", file=sys.stderr)
    if workers > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            for done in pool.imap_unordered(_render_chunk, jobs):
                bar.update(done)
    else:
        for job in jobs:
            bar.update(_render_chunk(job))
    bar.close()
    manifest = pd.DataFrame({"song_id": song_ids, "path": [f"{r:07d}.flac" for r in rows]})
    write_csv(manifest, out / "manifest.csv")


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


def world_statistics(
    plays: Plays,
    p_true: np.ndarray,
    target: np.ndarray,
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    songs: pd.DataFrame,
    members_df: pd.DataFrame,
    missing_songs: np.ndarray,
) -> list[tuple[str, str]]:
    """The world's figures, named as in :data:`KKBOX`, followed by context rows."""
    from sklearn.metrics import roc_auc_score

    tr, te = plays.split == 0, plays.split == 1
    n_tr, n_te = int(tr.sum()), int(te.sum())
    u_tr, u_te = np.unique(plays.user[tr]), np.unique(plays.user[te])
    s_tr, s_te = np.unique(plays.song[tr]), np.unique(plays.song[te])
    cold_u = ~np.isin(plays.user[te], u_tr)
    cold_s = ~np.isin(plays.song[te], s_tr)
    per_user = np.bincount(plays.user[tr])
    weighted = np.repeat(per_user, per_user)
    counts = np.sort(np.bincount(plays.song[tr])[s_tr])[::-1]
    top1 = counts[: max(1, len(counts) // 100)].sum() / n_tr
    top10 = counts[: max(1, len(counts) // 10)].sum() / n_tr
    tail = np.arange(n_tr) >= int(0.8 * n_tr)
    tab, screen, kind = (c[tr] for c in cols)

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    stats = [
        ("members", f"{len(members_df):,}"),
        ("songs (train+test)", f"{len(np.union1d(s_tr, s_te)):,}"),
        ("train rows", f"{n_tr:,}"),
        ("test rows", f"{n_te:,}"),
        ("train users / test users", f"{len(u_tr):,} / {len(u_te):,}"),
        ("train songs / test songs", f"{len(s_tr):,} / {len(s_te):,}"),
        ("rows per user train / test", f"{n_tr / len(u_tr):.1f} / {n_te / len(u_te):.1f}"),
        ("rows per song train / test", f"{n_tr / len(s_tr):.1f} / {n_te / len(s_te):.1f}"),
        (
            "row-weighted user rows p25/p50/p75",
            " / ".join(f"{np.percentile(weighted, q):.0f}" for q in (25, 50, 75)),
        ),
        ("cold test users (share of users)", pct(1 - np.isin(u_te, u_tr).mean())),
        ("cold test users (share of rows)", pct(cold_u.mean())),
        ("cold test songs (share of songs)", pct(1 - np.isin(s_te, s_tr).mean())),
        ("cold test songs (share of rows)", pct(cold_s.mean())),
        (
            "songs missing from songs.csv",
            f"{np.isin(missing_songs, s_tr).sum()} train / {np.isin(missing_songs, s_te).sum()} test",
        ),
        ("top 1 % songs: share of train rows", pct(top1)),
        ("top 10 % songs: share of train rows", pct(top10)),
        ("train target mean", f"{target[tr].mean():.4f}"),
        (
            "tab empty / null / screen empty / type empty",
            f"{100 * np.mean(tab == ''):.2f} / {100 * np.mean(tab == 'null'):.2f} / "
            f"{100 * np.mean(screen == ''):.2f} / {100 * np.mean(kind == ''):.2f} %",
        ),
        (
            "songs: genre / composer / lyricist / isrc empty",
            " / ".join(
                f"{100 * np.mean(songs[c] == ''):.1f}"
                for c in ("genre_ids", "composer", "lyricist")
            )
            + " / (see song_extra_info)",
        ),
        (
            "members: bd = 0 / gender empty",
            f"{100 * np.mean(members_df.bd == 0):.1f} / {100 * np.mean(members_df.gender == ''):.1f} %",
        ),
        (
            "oracle AUC, validation tail",
            f"{roc_auc_score(target[tr][tail], p_true[tr][tail]):.4f}",
        ),
        ("oracle AUC, all train / test", ""),
    ]
    stats[-1] = (
        "oracle AUC, all train / test",
        f"{roc_auc_score(target[tr], p_true[tr]):.4f} / {roc_auc_score(target[te], p_true[te]):.4f}",
    )
    return stats


def context_statistics(
    cols: tuple[np.ndarray, np.ndarray, np.ndarray], target: np.ndarray, split: np.ndarray
) -> list[tuple[str, str, str]]:
    """Share and replay rate of each source_system_tab and source_type value in train."""
    tr = split == 0
    out = []
    facts = {
        "source_system_tab": {
            "my library": (49.95, 0.620),
            "discover": (29.54, 0.416),
            "search": (8.45, 0.421),
            "radio": (6.46, 0.223),
            "listen with": (2.88, 0.327),
            "explore": (2.28, 0.422),
            "null": (0.09, 0.434),
            "notification": (0.08, 0.378),
            "settings": (0.03, 0.591),
        },
        "source_type": {
            "local-library": (30.65, 0.632),
            "online-playlist": (26.67, 0.425),
            "local-playlist": (14.63, 0.658),
            "radio": (6.55, 0.220),
            "album": (6.47, 0.393),
            "top-hits-for-artist": (5.74, 0.419),
            "song": (3.32, 0.437),
            "song-based-playlist": (2.85, 0.380),
            "listen-with": (2.61, 0.320),
            "topic-article-playlist": (0.15, 0.494),
            "artist": (0.04, 0.573),
            "my-daily-playlist": (0.01, 0.376),
        },
    }
    for name, col in (("source_system_tab", cols[0][tr]), ("source_type", cols[2][tr])):
        y = target[tr]
        for value, (share, rate) in facts[name].items():
            m = col == value
            world = f"{100 * m.mean():5.2f} %  {y[m].mean() if m.any() else float('nan'):.3f}"
            out.append((f"{name} = {value}", world, f"{share:5.2f} %  {rate:.3f}"))
    return out


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def generate(out: Path, scale_name: str, *, seed: int = 0, audio: bool = False) -> None:
    """Generate the world into ``out`` and print its statistics beside KKBox's.

    Parameters
    ----------
    out : Path
        Output folder; ``data/`` (and ``audio/``) are created inside.
    scale_name : str
        ``tiny``, ``demo`` or ``full``.
    seed : int, optional (default=0)
        Same seed, same bytes.
    audio : bool, optional (default=False)
        Also render one clip per song of ``songs.csv``.
    """
    t0 = time.perf_counter()
    scale = SCALES[scale_name]
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    # independent streams per part, so changing one part leaves the others alone
    streams = np.random.SeedSequence(seed).spawn(8)
    r_members, r_cat, r_plays, r_target, r_meta, r_ctx, r_ids, r_miss = (
        np.random.default_rng(s) for s in streams
    )

    # the world and its plays
    members = build_members(r_members, scale)
    cat = build_catalogue(r_cat, scale)
    plays = draw_plays(r_plays, members, cat)
    p_true = true_probability(members, cat, plays)
    target = (r_target.random(len(p_true)) < p_true).astype(np.int8)
    t_world = time.perf_counter() - t0

    # ids, metadata, and a few played songs left out of songs.csv
    msno = make_ids(r_ids, scale.n_members)
    song_ids = make_ids(r_ids, scale.n_songs)
    songs, extra = song_table(r_meta, cat, song_ids)
    members_df = member_table(r_meta, members, msno)
    counts = np.bincount(plays.song, minlength=scale.n_songs)
    rare = np.flatnonzero((counts > 0) & (counts <= np.quantile(counts[counts > 0], 0.3)))
    n_missing = max(3, round(66 / 419_839 * scale.n_songs))
    missing = r_miss.choice(rare, size=min(n_missing, len(rare)), replace=False)
    listed = np.setdiff1d(np.arange(scale.n_songs), missing)
    order = r_miss.permutation(listed)
    songs, extra = songs.iloc[order], extra.iloc[order]
    members_df = members_df.iloc[r_miss.permutation(scale.n_members)]

    # plays to files
    cols = context_columns(r_ctx, plays.context, plays.split)
    tr, te = plays.split == 0, plays.split == 1
    train = pd.DataFrame(
        {
            "msno": msno[plays.user[tr]],
            "song_id": song_ids[plays.song[tr]],
            "source_system_tab": cols[0][tr],
            "source_screen_name": cols[1][tr],
            "source_type": cols[2][tr],
            "target": target[tr],
        }
    )
    test = pd.DataFrame(
        {
            "id": np.arange(int(te.sum())),
            "msno": msno[plays.user[te]],
            "song_id": song_ids[plays.song[te]],
            "source_system_tab": cols[0][te],
            "source_screen_name": cols[1][te],
            "source_type": cols[2][te],
        }
    )
    files = [
        (train, "train.csv"),
        (test, "test.csv"),
        (songs, "songs.csv"),
        (members_df, "members.csv"),
        (extra, "song_extra_info.csv"),
        (pd.DataFrame({"p_true": p_true[tr]}), "truth_train.csv"),
        (pd.DataFrame({"p_true": p_true[te]}), "truth_test.csv"),
    ]
    style = pd.DataFrame(cat.style[:, : len(AUDIBLE_DIMS)].round(4), columns=list(AUDIBLE_DIMS))
    style.insert(0, "song_id", song_ids)
    files.append((style, "song_style.csv"))
    del train, test
    for df, name in tqdm(files, desc="write", unit="file", file=sys.stderr):
        write_csv(df, data / name)
    del files

    # audio for every song of songs.csv
    if audio:
        render_audio(
            out / "audio",
            songs.song_id.to_numpy(),
            cat.style[order, : len(AUDIBLE_DIMS)],
            seed=seed,
            workers=min(os.cpu_count() or 1, 8),
        )

    # statistics beside KKBox's
    stats = world_statistics(plays, p_true, target, cols, songs, members_df, missing)
    isrc_empty = 100 * np.mean(extra.isrc == "")
    stats = [(k, v.replace("(see song_extra_info)", f"{isrc_empty:.1f} %")) for k, v in stats]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"demo world '{scale_name}' (seed {seed}) in {out}")
    print(f"{'quantity':46s} {'world':>24s}   {'KKBox (full)':>24s}")
    for key, value in stats:
        print(f"{key:46s} {value:>24s}   {KKBOX.get(key, ''):>24s}")
    print(f"\n{'train context (share, replay rate)':46s} {'world':>24s}   {'KKBox (full)':>24s}")
    for key, world, facts in context_statistics(cols, target, plays.split):
        print(f"{key:46s} {world:>24s}   {facts:>24s}")
    print(f"\ngenerated in {seconds:.1f} s (world {t_world:.1f} s), peak memory {peak:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny", help="world size")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--audio", action="store_true", help="render one 3 s clip per song")
    args = parser.parse_args(argv)
    generate(args.out, args.scale, seed=args.seed, audio=args.audio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
