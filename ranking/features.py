"""Feature groups for the ranker, switched on and off by name.

Every group is a builder registered in :data:`FEATURE_GROUPS`; it returns one column per feature
for all rows, train rows first and test rows after them (row order is time order). Groups flagged
``label_derived`` read labels, and only through :mod:`ranking.oof`; every other group is computed
from occurrences over train and test together and never reads a label.

=============  =====  =====================================================================
group          label  what it holds
=============  =====  =====================================================================
counts         no     popularity of user, song, artist, genre, context values and pairs;
                      row position and the user's / song's plays so far
member         no     cleaned age, tenure, days to expiry, city, registered_via, gender
song           no     length, first genre, genre count, language, composer / lyricist counts,
                      artist (frequent ones as a categorical)
isrc           no     country, registrant and year decoded from the ISRC
context        no     source_system_tab, source_screen_name, source_type as categoricals
target_stats   yes    smoothed replay rates of user, song, artist, genre and their pairs with
                      the context, out of fold
cf             no     truncated-SVD factors of user-song and user-artist occurrences: the
                      user-item dot products and the cosine of the song against the user's
                      earlier songs
=============  =====  =====================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from embedding.errors import InputError

from ._log import logger
from .data import KKBoxData, clean_age
from .oof import Folds, make_folds, target_rate

CONTEXT_COLUMNS = ("source_system_tab", "source_screen_name", "source_type")
DEFAULT_GROUPS = ("counts", "member", "song", "isrc", "context", "target_stats", "cf")


class Features(NamedTuple):
    """A feature matrix for all rows (train first, then test) and its column lists."""

    X: pd.DataFrame
    feature_names: list[str]
    categorical_names: list[str]


@dataclass
class FeatureContext:
    """Everything a group builder may read: per-row codes, labels and the fold assignment.

    Attributes
    ----------
    data : KKBoxData
        The loaded data set.
    folds : Folds or None
        Fold assignment over all rows (-1 outside the fitting rows); None when no group reads
        labels.
    labels : ndarray [shape=(n_rows,), dtype=float64] or None
        ``target`` for train rows, NaN for test rows; read only through :mod:`ranking.oof`.
    max_categories : int
        Most levels kept for a high-cardinality categorical; rarer levels become missing.
    svd_rank : int
        Rank of the truncated SVDs of the ``cf`` group.
    seed : int
        Seed of the randomised parts (SVD).
    """

    data: KKBoxData
    folds: Folds | None = None
    labels: np.ndarray | None = None
    max_categories: int = 50
    svd_rank: int = 24
    seed: int = 0
    shared: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Number of train rows (the first rows)."""
        return len(self.data.train)

    @property
    def n_rows(self) -> int:
        """Number of train and test rows together."""
        return self.n_train + (0 if self.data.test is None else len(self.data.test))

    def _rows(self, column: str) -> pd.Series:
        """One column of train and test stacked, categories unioned for categoricals."""
        parts = [self.data.train[column]]
        if self.data.test is not None:
            parts.append(self.data.test[column])
        if len(parts) == 1:
            return parts[0].reset_index(drop=True)
        if isinstance(parts[0].dtype, pd.CategoricalDtype):
            cat = pd.api.types.union_categoricals(parts, ignore_order=True)
            return pd.Series(cat)
        return pd.concat(parts, ignore_index=True)

    @cached_property
    def user(self) -> np.ndarray:
        """User code of every row (index into the shared ``msno`` categories)."""
        return _codes(self._rows("msno"))

    @cached_property
    def song(self) -> np.ndarray:
        """Song code of every row (index into the shared ``song_id`` categories)."""
        return _codes(self._rows("song_id"))

    @cached_property
    def context(self) -> dict[str, pd.Series]:
        """The three ``source_*`` columns over all rows, as categoricals."""
        return {c: self._rows(c) for c in CONTEXT_COLUMNS}

    @cached_property
    def song_index(self) -> np.ndarray:
        """Row of ``data.songs`` for every song code, -1 when the song has no metadata."""
        n_cats = len(self.data.train["song_id"].cat.categories)
        index = np.full(n_cats, -1, dtype=np.int64)
        index[_codes(self.data.songs["song_id"])] = np.arange(len(self.data.songs))
        return index

    def song_attr(self, codes: np.ndarray) -> np.ndarray:
        """Map a song-level int code array (one per ``data.songs`` row) to every row; -1 missing."""
        row = self.song_index[self.song]
        return _take(codes, row, -1).astype(np.int64)

    def song_value(self, values: np.ndarray) -> np.ndarray:
        """Map a song-level float array to every row; NaN where the song has no metadata."""
        row = self.song_index[self.song]
        return _take(values, row, np.nan).astype(np.float32)

    @cached_property
    def artist(self) -> np.ndarray:
        """Artist code of every row, -1 when unknown."""
        return self.song_attr(_codes(self.data.songs["artist_name"]))

    @cached_property
    def genre(self) -> np.ndarray:
        """Code of the first listed genre of every row, -1 when unknown."""
        genre_ids = self.data.songs["genre_ids"].astype("category")
        firsts = pd.Series(genre_ids.cat.categories.astype(str)).str.split("|").str[0]
        first_codes, _ = pd.factorize(firsts)
        per_song = _take(first_codes, genre_ids.cat.codes.to_numpy(), -1)
        return self.song_attr(per_song)

    @cached_property
    def language(self) -> np.ndarray:
        """Language code of every row as an int, -1 when unknown."""
        lang = self.data.songs["language"].to_numpy(dtype=np.float64)
        codes, _ = pd.factorize(pd.Series(lang))
        return self.song_attr(codes)

    @cached_property
    def members(self) -> pd.DataFrame:
        """``data.members`` reindexed by user code (one row per ``msno`` category)."""
        n_users = len(self.data.train["msno"].cat.categories)
        table = self.data.members.copy()
        table.index = _codes(table["msno"])
        table = table[table.index >= 0]
        table = table[~table.index.duplicated()]
        return table.reindex(np.arange(n_users))


def _codes(series: pd.Series) -> np.ndarray:
    """Integer codes of a categorical (or factorised other) series, -1 for missing."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy().astype(np.int64)
    codes, _ = pd.factorize(series)
    return codes.astype(np.int64)


def _take(table: np.ndarray, index: np.ndarray, fill: float) -> np.ndarray:
    """``table[index]`` with ``fill`` where ``index`` is negative (or the table is empty)."""
    if table.size == 0:
        return np.full(index.shape[0], fill)
    return np.where(index >= 0, table[np.maximum(index, 0)], fill)


def pair_key(*codes: np.ndarray) -> np.ndarray:
    """Compact integer key of a tuple of code arrays; -1 where any part is missing.

    Parameters
    ----------
    *codes : ndarray [shape=(n_rows,), dtype=int]
        Non-negative codes, -1 for missing.

    Returns
    -------
    ndarray [shape=(n_rows,), dtype=int64]
        Key in ``0..n_distinct-1`` for complete tuples, -1 otherwise.
    """
    # combine as mixed-radix numbers, then factorise to keep keys compact
    combined = np.zeros(codes[0].shape[0], dtype=np.int64)
    missing = np.zeros(codes[0].shape[0], dtype=bool)
    for c in codes:
        c = np.asarray(c, dtype=np.int64)
        missing |= c < 0
        combined = combined * (int(c.max()) + 2) + (c + 1)
        combined, _ = pd.factorize(combined)
        combined = combined.astype(np.int64)
    combined[missing] = -1
    return combined


def _count(key: np.ndarray) -> np.ndarray:
    """Occurrences of each row's key over all rows; NaN where the key is missing."""
    ok = key >= 0
    counts = np.bincount(key[ok], minlength=int(key.max()) + 1 if ok.any() else 1)
    return np.where(ok, counts[np.maximum(key, 0)], np.nan).astype(np.float32)


def _cumcount(key: np.ndarray) -> np.ndarray:
    """How many earlier rows (in row order) share each row's key; NaN where it is missing."""
    so_far = pd.Series(key).groupby(key).cumcount().to_numpy().astype(np.float32)
    return np.where(key >= 0, so_far, np.nan).astype(np.float32)


def _capped_category(codes: np.ndarray, max_categories: int) -> pd.Categorical[Any]:
    """Categorical of the ``max_categories`` most frequent codes; the rest become missing."""
    # the most frequent codes, kept in code order
    ok = codes >= 0
    counts = np.bincount(codes[ok], minlength=1)
    keep = np.argsort(-counts, kind="stable")[:max_categories]
    keep = np.sort(keep[counts[keep] > 0])
    if keep.size == 0:
        return pd.Categorical.from_codes(np.full(codes.shape[0], -1), categories=pd.Index([0]))

    # position of each row's code among the kept ones, -1 when dropped or missing
    pos = np.minimum(np.searchsorted(keep, codes), keep.size - 1)
    hit = ok & (keep[pos] == codes)
    return pd.Categorical.from_codes(np.where(hit, pos, -1), categories=pd.Index(keep))


@dataclass(frozen=True)
class FeatureGroup:
    """A named feature builder.

    Attributes
    ----------
    name : str
        Name used by ``--groups``.
    build : callable
        ``build(ctx) -> DataFrame`` with one column per feature over all rows.
    label_derived : bool
        True when the group reads labels (then only through :mod:`ranking.oof`).
    """

    name: str
    build: Callable[[FeatureContext], pd.DataFrame]
    label_derived: bool


FEATURE_GROUPS: dict[str, FeatureGroup] = {}


def register_group(
    name: str, *, label_derived: bool
) -> Callable[[Callable[[FeatureContext], pd.DataFrame]], Callable[[FeatureContext], pd.DataFrame]]:
    """Register a feature group builder under ``name`` (a decorator).

    Parameters
    ----------
    name : str
        Name of the group, as given to ``--groups``.
    label_derived : bool
        True when the builder reads labels; it must then go through :mod:`ranking.oof`.

    Returns
    -------
    callable
        The decorator, which returns the builder unchanged.
    """

    def decorate(
        build: Callable[[FeatureContext], pd.DataFrame],
    ) -> Callable[[FeatureContext], pd.DataFrame]:
        FEATURE_GROUPS[name] = FeatureGroup(name=name, build=build, label_derived=label_derived)
        return build

    return decorate


@register_group("counts", label_derived=False)
def _counts(ctx: FeatureContext) -> pd.DataFrame:
    """Popularity counts over train and test, and the time-ish row positions."""
    # single keys and pairs
    ctx_codes = {c: _codes(s) for c, s in ctx.context.items()}
    keys = {
        "user": ctx.user,
        "song": ctx.song,
        "artist": ctx.artist,
        "genre": ctx.genre,
        "tab": ctx_codes["source_system_tab"],
        "screen": ctx_codes["source_screen_name"],
        "type": ctx_codes["source_type"],
        "user_song": pair_key(ctx.user, ctx.song),
        "user_artist": pair_key(ctx.user, ctx.artist),
        "user_genre": pair_key(ctx.user, ctx.genre),
        "user_type": pair_key(ctx.user, ctx_codes["source_type"]),
        "user_tab": pair_key(ctx.user, ctx_codes["source_system_tab"]),
        "song_type": pair_key(ctx.song, ctx_codes["source_type"]),
    }
    out = {f"cnt_{name}": _count(key) for name, key in keys.items()}

    # shares of the user's plays
    out["share_user_artist"] = out["cnt_user_artist"] / out["cnt_user"]
    out["share_user_type"] = out["cnt_user_type"] / out["cnt_user"]

    # row order is time order: position, plays so far and plays left
    out["row_pos"] = (np.arange(ctx.n_rows) / max(ctx.n_rows - 1, 1)).astype(np.float32)
    out["user_so_far"] = _cumcount(ctx.user)
    out["user_so_far_frac"] = out["user_so_far"] / out["cnt_user"]
    out["song_so_far"] = _cumcount(ctx.song)
    out["user_artist_so_far"] = _cumcount(keys["user_artist"])
    return pd.DataFrame(out)


@register_group("member", label_derived=False)
def _member(ctx: FeatureContext) -> pd.DataFrame:
    """Member attributes: cleaned age, tenure, days to expiry, city, registered_via, gender."""
    # per-user values first, then spread to rows
    members = ctx.members
    registered = members["registration_init_time"]
    expires = members["expiration_date"]
    reference = registered.max()
    per_user = {
        "age": clean_age(members["bd"].fillna(0).to_numpy()),
        "tenure_days": (expires - registered).dt.days.to_numpy(dtype=np.float32),
        "days_to_expiry": (expires - reference).dt.days.to_numpy(dtype=np.float32),
        "days_registered": (reference - registered).dt.days.to_numpy(dtype=np.float32),
    }
    out: dict[str, object] = {k: v[ctx.user] for k, v in per_user.items()}

    # small categoricals
    for col in ("city", "registered_via", "gender"):
        codes = _codes(members[col].astype("category"))
        out[col] = _capped_category(codes[ctx.user], ctx.max_categories)
    return pd.DataFrame(out)


@register_group("song", label_derived=False)
def _song(ctx: FeatureContext) -> pd.DataFrame:
    """Song metadata: length, genre, language, credits counts and frequent artists."""
    songs = ctx.data.songs

    # counts of '|'-separated names, computed once per distinct string
    def n_parts(col: str) -> np.ndarray:
        series = songs[col].astype("category")
        per_cat = pd.Series(series.cat.categories.astype(str)).str.count(r"\|").to_numpy() + 1
        codes = series.cat.codes.to_numpy()
        return _take(per_cat, codes, 0).astype(np.float32)

    out: dict[str, object] = {
        "song_length": ctx.song_value(songs["song_length"].to_numpy(dtype=np.float32)),
        "genre_count": ctx.song_value(n_parts("genre_ids")),
        "composer_count": ctx.song_value(n_parts("composer")),
        "lyricist_count": ctx.song_value(n_parts("lyricist")),
        "genre_first": _capped_category(ctx.genre, ctx.max_categories),
        "language": _capped_category(ctx.language, ctx.max_categories),
        "artist": _capped_category(ctx.artist, ctx.max_categories),
    }
    return pd.DataFrame(out)


@register_group("isrc", label_derived=False)
def _isrc(ctx: FeatureContext) -> pd.DataFrame:
    """Country, registrant and year decoded from the ISRC (``CCXXXYYNNNNN``)."""
    # decode per song of song_extra_info, then spread to rows
    extra = ctx.data.extra
    isrc = extra["isrc"].astype("string").str.upper()
    year2 = pd.to_numeric(isrc.str.slice(5, 7), errors="coerce").to_numpy(dtype=np.float64)
    year = np.where(year2 > 30, 1900 + year2, 2000 + year2).astype(np.float32)
    country, _ = pd.factorize(isrc.str.slice(0, 2))
    registrant, _ = pd.factorize(isrc.str.slice(0, 5))
    n_cats = len(ctx.data.train["song_id"].cat.categories)
    index = np.full(n_cats, -1, dtype=np.int64)
    index[_codes(extra["song_id"])] = np.arange(len(extra))
    row = index[ctx.song]
    year_row = _take(year, row, np.nan).astype(np.float32)
    country_row = _take(country, row, -1).astype(np.int64)
    registrant_row = _take(registrant, row, -1).astype(np.int64)
    return pd.DataFrame(
        {
            "isrc_year": year_row,
            "isrc_country": _capped_category(country_row, ctx.max_categories),
            "isrc_registrant": _capped_category(registrant_row, ctx.max_categories),
        }
    )


@register_group("context", label_derived=False)
def _context(ctx: FeatureContext) -> pd.DataFrame:
    """The three ``source_*`` columns as categoricals."""
    return pd.DataFrame(
        {c: _capped_category(_codes(s), ctx.max_categories) for c, s in ctx.context.items()}
    )


@register_group("target_stats", label_derived=True)
def _target_stats(ctx: FeatureContext) -> pd.DataFrame:
    """Leak-free smoothed replay rates of users, songs, artists and their context pairs."""
    if ctx.folds is None or ctx.labels is None:
        raise InputError("target_stats needs labels and folds: build it through build_features")
    tab, screen, kind = (_codes(s) for s in ctx.context.values())
    keys = {
        "user": ctx.user,
        "song": ctx.song,
        "artist": ctx.artist,
        "genre": ctx.genre,
        "user_type": pair_key(ctx.user, kind),
        "user_tab": pair_key(ctx.user, tab),
        "user_screen": pair_key(ctx.user, screen),
        "user_artist": pair_key(ctx.user, ctx.artist),
        "user_genre": pair_key(ctx.user, ctx.genre),
        "user_language": pair_key(ctx.user, ctx.language),
        "song_type": pair_key(ctx.song, kind),
        "artist_type": pair_key(ctx.artist, kind),
        "context": pair_key(tab, screen, kind),
    }
    return pd.DataFrame(
        {f"rate_{name}": target_rate(key, ctx.labels, ctx.folds) for name, key in keys.items()}
    )


def _factors(rows: np.ndarray, cols: np.ndarray, rank: int, seed: int) -> tuple[np.ndarray, ...]:
    """Truncated SVD of the row-column occurrence matrix: (row factors, col factors, col index)."""
    # compact the column ids that occur, build the binary occurrence matrix
    ok = (rows >= 0) & (cols >= 0)
    col_index, col_compact = np.unique(cols[ok], return_inverse=True)
    n_rows = int(rows.max()) + 1
    matrix = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], col_compact)),
        shape=(n_rows, col_index.size),
    )
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)

    # split the singular values evenly between the two sides
    rank = max(1, min(rank, min(matrix.shape) - 1))
    u, s, vt = randomized_svd(matrix, n_components=rank, n_iter=4, random_state=seed)
    root = np.sqrt(s).astype(np.float32)
    return (u * root).astype(np.float32), (vt.T * root).astype(np.float32), col_index


def _history_cosine(user: np.ndarray, item_factors: np.ndarray, block: int = 4) -> np.ndarray:
    """Cosine of each row's item factor with the sum of the user's earlier items' factors."""
    # sort rows by user keeping time order inside each user
    n = user.shape[0]
    order = np.argsort(user, kind="stable")
    sorted_user = user[order]
    starts = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    start_of = np.maximum.accumulate(np.where(starts, np.arange(n), 0))

    # running sums per user, a few factor dimensions at a time to bound memory
    dot = np.zeros(n)
    hist_sq = np.zeros(n)
    item_sq = np.zeros(n)
    for lo in range(0, item_factors.shape[1], block):
        f = item_factors[order, lo : lo + block].astype(np.float64)  # (n, block)
        run = np.cumsum(f, axis=0)
        run -= f
        run -= run[start_of]
        dot += np.einsum("ij,ij->i", run, f)
        hist_sq += np.einsum("ij,ij->i", run, run)
        item_sq += np.einsum("ij,ij->i", f, f)

    # undo the sort; the first play of a user has no history
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / np.sqrt(hist_sq * item_sq)
    cos[(hist_sq <= 1e-12) | (item_sq <= 1e-12)] = np.nan
    out = np.empty(n, dtype=np.float32)
    out[order] = cos
    return out


@register_group("cf", label_derived=False)
def _cf(ctx: FeatureContext) -> pd.DataFrame:
    """Collaborative factors from occurrences: user-item dot products and history cosines."""
    out: dict[str, np.ndarray] = {}
    for name, items in (("song", ctx.song), ("artist", ctx.artist)):
        # factor the user-item occurrences over train and test
        user_f, item_f, item_index = _factors(ctx.user, items, ctx.svd_rank, ctx.seed)
        pos = np.searchsorted(item_index, items)
        known = (items >= 0) & (pos < item_index.size)
        known &= item_index[np.minimum(pos, item_index.size - 1)] == items
        row_item = np.where(known[:, None], item_f[np.minimum(pos, item_index.size - 1)], 0.0)

        # dot with the user's factor, cosine with the user's earlier items
        dot = np.einsum("ij,ij->i", user_f[ctx.user], row_item).astype(np.float32)
        out[f"svd_user_{name}_dot"] = np.where(known, dot, np.nan).astype(np.float32)
        cos = _history_cosine(ctx.user, row_item.astype(np.float32))
        out[f"svd_history_{name}_cos"] = np.where(known, cos, np.nan).astype(np.float32)
        if name == "song":
            out["svd_song_norm"] = np.where(known, np.linalg.norm(row_item, axis=1), np.nan)
    return pd.DataFrame({k: v.astype(np.float32) for k, v in out.items()})


def row_labels(data: KKBoxData) -> np.ndarray:
    """``target`` of the train rows followed by NaN for each test row (float64)."""
    n_test = 0 if data.test is None else len(data.test)
    return np.r_[data.train["target"].to_numpy(dtype=np.float64), np.full(n_test, np.nan)]


def build_features(
    data: KKBoxData,
    *,
    fit_mask: np.ndarray,
    groups: Sequence[str] = DEFAULT_GROUPS,
    n_folds: int = 5,
    seed: int = 0,
    max_categories: int = 50,
    svd_rank: int = 24,
    cache: dict[str, pd.DataFrame] | None = None,
) -> Features:
    """Build the feature matrix of all rows (train first, then test).

    Parameters
    ----------
    data : KKBoxData
        The loaded data set.
    fit_mask : ndarray [shape=(n_train,) or (n_train + n_test,), dtype=bool]
        The fitting rows, whose labels label-derived groups may read (out of fold); test rows
        must be False.
    groups : sequence of str, optional (default=DEFAULT_GROUPS)
        Names of the groups to build, from :data:`FEATURE_GROUPS`.
    n_folds : int, optional (default=5)
        Folds of the out-of-fold scheme.
    seed : int, optional (default=0)
        Seed of the folds and of the SVD.
    max_categories : int, optional (default=50)
        Most levels kept per high-cardinality categorical.
    svd_rank : int, optional (default=24)
        Rank of the ``cf`` group's truncated SVDs.
    cache : dict or None, optional (default=None)
        Filled with, and read for, the groups that do not read labels, so a second call on the
        same data (e.g. the refit) builds only the label-derived groups again.

    Returns
    -------
    Features
        ``(X, feature_names, categorical_names)``; ``X`` has float32 and category columns.

    Raises
    ------
    InputError
        If a group name is unknown or ``fit_mask`` has the wrong length or selects test rows.
    """
    # check the request
    unknown = [g for g in groups if g not in FEATURE_GROUPS]
    if unknown:
        raise InputError(
            f"groups={unknown}: unknown feature group; choose from {sorted(FEATURE_GROUPS)}"
        )
    n_train = len(data.train)
    n_rows = n_train + (0 if data.test is None else len(data.test))
    fit_mask = np.asarray(fit_mask, dtype=bool)
    if fit_mask.shape == (n_train,):
        fit_mask = np.r_[fit_mask, np.zeros(n_rows - n_train, dtype=bool)]
    if fit_mask.shape != (n_rows,):
        raise InputError(
            f"fit_mask.shape={fit_mask.shape}: expected ({n_train},) or ({n_rows},), one flag per "
            "train row or per train and test row"
        )
    if fit_mask[n_train:].any():
        raise InputError("fit_mask selects test rows: only train rows have labels to fit on")

    # one context shared by all groups
    ctx = FeatureContext(
        data=data,
        folds=make_folds(fit_mask, n_folds=n_folds, seed=seed),
        labels=row_labels(data),
        max_categories=max_categories,
        svd_rank=svd_rank,
        seed=seed,
    )

    # build or reuse each group
    frames = []
    for name in groups:
        group = FEATURE_GROUPS[name]
        if cache is not None and not group.label_derived and name in cache:
            frames.append(cache[name])
            continue
        started = time.perf_counter()
        frame = group.build(ctx)
        logger.info(
            "feature group %s: %d columns in %.1f s",
            name,
            frame.shape[1],
            time.perf_counter() - started,
        )
        if cache is not None and not group.label_derived:
            cache[name] = frame
        frames.append(frame)

    # assemble: numbers as float32, categoricals kept
    X = pd.concat(frames, axis=1) if frames else pd.DataFrame(index=range(n_rows))
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    X[numeric] = X[numeric].astype(np.float32)
    return Features(X=X, feature_names=list(X.columns), categorical_names=categorical)


def build_starter_features(data: KKBoxData) -> Features:
    """The raw columns as the public starter kernels used them, for the baseline model.

    Ids, context and text columns become categoricals; numbers and dates (as ``yyyymmdd``
    integers) stay numbers. No engineered features.

    Parameters
    ----------
    data : KKBoxData
        The loaded data set.

    Returns
    -------
    Features
        ``(X, feature_names, categorical_names)`` for all rows, train first.
    """
    # ids and context per row
    ctx = FeatureContext(data=data)
    out: dict[str, object] = {
        "msno": _as_category(ctx.user),
        "song_id": _as_category(ctx.song),
    }
    for c, s in ctx.context.items():
        out[c] = _as_category(_codes(s))

    # song columns joined on song_id
    songs = data.songs
    for col in ("genre_ids", "artist_name", "composer", "lyricist"):
        out[col] = _as_category(ctx.song_attr(_codes(songs[col].astype("category"))))
    out["song_length"] = ctx.song_value(songs["song_length"].to_numpy(dtype=np.float32))
    out["language"] = ctx.song_value(songs["language"].to_numpy(dtype=np.float32))

    # member columns joined on msno
    members = ctx.members
    for col in ("city", "bd", "registered_via"):
        out[col] = members[col].to_numpy(dtype=np.float32)[ctx.user]
    out["gender"] = _as_category(_codes(members["gender"].astype("category"))[ctx.user])
    for col in ("registration_init_time", "expiration_date"):
        ymd = members[col].dt.strftime("%Y%m%d").astype("float32")
        out[col] = ymd.to_numpy(dtype=np.float32)[ctx.user]

    X = pd.DataFrame(out, index=range(ctx.n_rows))
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    return Features(X=X, feature_names=list(X.columns), categorical_names=categorical)


def _as_category(codes: np.ndarray) -> pd.Categorical[Any]:
    """Categorical whose levels are the integer codes themselves (-1 becomes missing)."""
    n = int(codes.max()) + 1 if codes.size and codes.max() >= 0 else 1
    return pd.Categorical.from_codes(codes, categories=pd.RangeIndex(n))
