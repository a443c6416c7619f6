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
audio          yes    the song's audio against the user's taste profile (the mean of the unit
                      vectors of the songs the user replayed): the cosine scaled by the
                      profile's norm and the dot with the replayed minus the once-played
                      songs' profile, out of fold; and, reading no label, against the mean of
                      the user's other plays; all in the listener space of the vectors; needs
                      song vectors, so it is not a default group
=============  =====  =====================================================================

Query rows. Besides the observed rows (train, then test), :func:`build_features` can describe
*query rows*: (user, song, context) triples that did not happen, such as the candidates of a
recommendation. A query row gets the features it would have if it alone were appended after the
last observed row: its counts include it once, its "so far" counts see every observed row, and
statistics, factors and profiles come from the observed rows (labels: all fitting rows), never
refitted for it. The builders are the same for both kinds of rows; what they fit on the observed
rows is kept in a ``memo`` dict that the caller passes again, so once a first call has filled it
a few hundred query rows take milliseconds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from embedding.errors import InputError, MismatchError
from retrieval.profiles import mean_profiles, profile_dot
from retrieval.projection import fit_group_projection

from ._log import logger
from .data import KKBoxData, clean_age
from .oof import Applier, Folds, fit_rate, make_folds, out_of_fold, target_rate

CONTEXT_COLUMNS = ("source_system_tab", "source_screen_name", "source_type")
TAB, SCREEN, TYPE = CONTEXT_COLUMNS
QUERY_COLUMNS = ("msno", "song_id", *CONTEXT_COLUMNS)
DEFAULT_GROUPS = ("counts", "member", "song", "isrc", "context", "target_stats", "cf")
AUDIO_GROUP = "audio"
# smoothing of the target_stats replay rates, in pseudo-rows
RATE_SMOOTHING = 20.0
# the listener space of the audio group: directions kept, the shrinkage of the within-listener
# scatter, and the fewest plays a listener needs to take part (see retrieval.fit_group_projection)
LISTENER_COMPONENTS = 8
LISTENER_SHRINKAGE = 0.3
LISTENER_MIN_PLAYS = 5

T = TypeVar("T")
# what a group builder returns: feature name -> one value per row (float array or Categorical)
Columns = dict[str, Any]


class Features(NamedTuple):
    """A feature matrix for all rows (train first, then test) and its column lists.

    For query rows ``arrays`` also holds every column as built (float32 arrays and
    Categoricals), for callers that would rather not index the frame column by column.
    """

    X: pd.DataFrame
    feature_names: list[str]
    categorical_names: list[str]
    arrays: dict[str, Any] | None = None


@dataclass(frozen=True)
class SongVectors:
    """Song vectors addressed by the song codes of a data set.

    Attributes
    ----------
    vectors : ndarray [shape=(n_vectors, dim)]
        Song vectors, e.g. the memory-mapped ``EmbeddingStore.vectors``; only rows in use are
        read.
    rows : ndarray [shape=(n_songs,), dtype=int64]
        Row in ``vectors`` of every song code (``data.song_ids[code]``), -1 for a song without
        a vector.
    listeners : scipy.sparse.csr_matrix [shape=(n_users, n_songs)] or None
        How often each user played each song code (:func:`listener_plays`); the ``listener``
        space needs it.
    """

    vectors: np.ndarray
    rows: np.ndarray
    listeners: sp.csr_matrix | None = None

    @cached_property
    def centered(self) -> np.ndarray:
        """The vectors minus their mean over all rows, float32 in memory (n_vectors * dim * 4 B)."""
        # the mean a few thousand rows at a time, so a memory map is read once
        total = np.zeros(self.dim, dtype=np.float64)
        for start in range(0, self.vectors.shape[0], 16_384):
            total += np.asarray(self.vectors[start : start + 16_384], dtype=np.float64).sum(axis=0)
        mean = (total / max(self.vectors.shape[0], 1)).astype(np.float32)
        return np.asarray(self.vectors, dtype=np.float32) - mean

    @cached_property
    def by_listener(self) -> np.ndarray:
        """The vectors in the listener space, float32 (n_vectors, LISTENER_COMPONENTS).

        The space of :func:`retrieval.fit_group_projection` with listeners as groups, each song
        a member of every listener's group as often as they played it: the few directions in
        which the songs one person plays agree, scaled to unit spread within a listener. Those
        are the directions of taste; the melody, key and mix of each recording, which fill most
        of an embedding, drop out. Without plays, or with fewer than two listeners of
        ``LISTENER_MIN_PLAYS`` plays of songs with a vector, it is the centred space instead
        (logged).
        """
        if self.listeners is None:
            logger.warning("listener space: no plays given; using the centred space")
            return self.centered

        # the plays of songs with a vector, one column per vector row
        codes = np.flatnonzero(self.rows >= 0)
        plays = self.listeners[:, codes]
        try:
            projection = fit_group_projection(
                self.vectors[self.rows[codes]],
                plays,
                n_components=LISTENER_COMPONENTS,
                shrinkage=LISTENER_SHRINKAGE,
                min_group_size=LISTENER_MIN_PLAYS,
            )
        except InputError as err:
            logger.warning("listener space: %s; using the centred space", err)
            return self.centered
        return projection.transform(self.vectors)

    def space(self, name: str) -> np.ndarray:
        """The vectors as stored (``raw``), centred (``centered``) or projected (``listener``)."""
        if name == "raw":
            return self.vectors
        if name == "centered":
            return self.centered
        if name == "listener":
            return self.by_listener
        raise InputError(f"space={name!r}: expected 'raw', 'centered' or 'listener'")

    @property
    def dim(self) -> int:
        """Length of a song vector."""
        return int(self.vectors.shape[1])

    @property
    def n_with_vector(self) -> int:
        """Number of song codes that have a vector."""
        return int((self.rows >= 0).sum())

    @classmethod
    def from_ids(
        cls,
        song_ids: Sequence[str] | pd.Index,
        vector_ids: Sequence[str],
        vectors: np.ndarray,
        *,
        listeners: sp.csr_matrix | None = None,
    ) -> SongVectors:
        """Align ``vectors`` (one row per id of ``vector_ids``) with the codes of ``song_ids``.

        Parameters
        ----------
        song_ids : sequence of str or pd.Index
            Song id of every song code, e.g. ``data.song_ids``.
        vector_ids : sequence of str
            Song id of every row of ``vectors``, e.g. ``EmbeddingStore.ids``.
        vectors : ndarray [shape=(len(vector_ids), dim)]
            The vectors.
        listeners : sparse matrix [shape=(n_users, len(song_ids))] or None, optional
            Plays of every song code by every user (:func:`listener_plays`), for the
            ``listener`` space; default None.

        Returns
        -------
        SongVectors
        """
        rows = pd.Index(list(vector_ids)).get_indexer(pd.Index(song_ids))
        if listeners is not None and listeners.shape[1] != len(rows):
            raise InputError(
                f"listeners.shape={listeners.shape}: expected (n_users, {len(rows)}), one "
                "column per song id"
            )
        plays = None if listeners is None else sp.csr_matrix(listeners, dtype=np.float64)
        return cls(vectors=vectors, rows=rows.astype(np.int64), listeners=plays)


def listener_plays(data: KKBoxData) -> sp.csr_matrix:
    """How often each user played each song in train and test, for :attr:`SongVectors.listeners`.

    Reads no label: a replayed song and a song played once count alike.

    Parameters
    ----------
    data : KKBoxData

    Returns
    -------
    scipy.sparse.csr_matrix [shape=(len(data.user_ids), len(data.song_ids)), dtype=float64]
        By user code and song code.
    """
    frames = [data.train] if data.test is None else [data.train, data.test]
    users = np.concatenate([f["msno"].cat.codes.to_numpy(np.int64) for f in frames])
    songs = np.concatenate([f["song_id"].cat.codes.to_numpy(np.int64) for f in frames])
    keep = (users >= 0) & (songs >= 0)
    return sp.csr_matrix(
        (np.ones(int(keep.sum())), (users[keep], songs[keep])),
        shape=(len(data.user_ids), len(data.song_ids)),
    )


@dataclass(frozen=True)
class _KeyTable:
    """Distinct key tuples of the observed rows and how often each occurs."""

    uniques: np.ndarray  # distinct raw keys, in order of first appearance
    counts: np.ndarray  # occurrences of each distinct key
    observed: np.ndarray  # position in ``uniques`` of every observed row's key, -1 where missing

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`uniques` sorted, and the position of each sorted key, for lookups."""
        order = np.argsort(self.uniques, kind="stable")
        return self.uniques[order], order

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        """Position of each raw key in the table: -1 where a part is missing, -2 when unseen."""
        if self.uniques.size == 0:
            return np.where(raw < 0, -1, -2).astype(np.int64)
        keys, order = self._sorted
        pos = np.minimum(np.searchsorted(keys, raw), keys.size - 1)
        hit = keys[pos] == raw
        return np.where(raw < 0, -1, np.where(hit, order[pos], -2)).astype(np.int64)


@dataclass
class FeatureContext:
    """Everything a group builder may read: per-row codes, labels and the fold assignment.

    The rows a builder returns are the observed rows (train, then test), or the query rows when
    ``query`` is given; either way the code properties (:attr:`user`, :attr:`song`, ...) describe
    the returned rows, and :meth:`observed` the observed ones that statistics are fitted on.

    Attributes
    ----------
    data : KKBoxData
        The loaded data set.
    folds : Folds or None
        Fold assignment over the observed rows (-1 outside the fitting rows); None when no group
        reads labels.
    labels : ndarray [shape=(n_observed,), dtype=float64] or None
        ``target`` for train rows, NaN for test rows; read only through :mod:`ranking.oof`.
    max_categories : int
        Most levels kept for a high-cardinality categorical; rarer levels become missing.
    svd_rank : int
        Rank of the truncated SVDs of the ``cf`` group.
    seed : int
        Seed of the randomised parts (SVD).
    song_vectors : SongVectors or None
        Audio vectors by song code, for the ``audio`` group.
    query : pd.DataFrame or None
        Query rows to describe instead of the observed rows: ``msno``, ``song_id`` and the three
        ``source_*`` columns (ids and values as strings; an unknown user is allowed).
    query_seeds : dict of str to ndarray or None
        Seed song codes by ``msno``: the taste of those query users is the profile of the seeds
        instead of their fitted one (a user the data does not know, or a new taste).
    memo : dict
        What builders fitted on the observed rows, kept between calls on the same data.
    """

    data: KKBoxData
    folds: Folds | None = None
    labels: np.ndarray | None = None
    max_categories: int = 50
    svd_rank: int = 24
    seed: int = 0
    song_vectors: SongVectors | None = None
    query: pd.DataFrame | None = None
    query_seeds: dict[str, np.ndarray] | None = None
    memo: dict[Any, Any] = field(default_factory=dict)
    _out: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def n_train(self) -> int:
        """Number of train rows (the first observed rows)."""
        return len(self.data.train)

    @property
    def n_observed(self) -> int:
        """Number of train and test rows together."""
        return self.n_train + (0 if self.data.test is None else len(self.data.test))

    @property
    def n_rows(self) -> int:
        """Number of rows the builders return: the observed rows, or the query rows."""
        return self.n_observed if self.query is None else len(self.query)

    @property
    def is_query(self) -> bool:
        """True when the builders describe query rows."""
        return self.query is not None

    def fitted(self, key: Any, make: Callable[[], T]) -> T:
        """``memo[key]``, made by ``make()`` on first use (it must depend on observed rows only)."""
        if key not in self.memo:
            self.memo[key] = make()
        value: T = self.memo[key]
        return value

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

    @property
    def context(self) -> dict[str, pd.Series]:
        """The three ``source_*`` columns over the observed rows, as categoricals."""
        return self.fitted("context", lambda: {c: self._rows(c) for c in CONTEXT_COLUMNS})

    def observed(self, kind: str) -> np.ndarray:
        """Codes of ``kind`` for every observed row (see :meth:`codes` for the kinds)."""
        return self.fitted(("observed", kind), lambda: self._observed_codes(kind))

    def _observed_codes(self, kind: str) -> np.ndarray:
        """Compute :meth:`observed` (no memo)."""
        if kind == "user":
            return _codes(self._rows("msno"))
        if kind == "song":
            return _codes(self._rows("song_id"))
        if kind in CONTEXT_COLUMNS:
            return _codes(self.context[kind])
        return _take(self.song_codes(kind), _take(self.song_index, self.observed("song"), -1), -1)

    def codes(self, kind: str) -> np.ndarray:
        """Codes of ``kind`` for every returned row, -1 where missing.

        Parameters
        ----------
        kind : str
            ``user``, ``song``, ``artist``, ``genre``, ``language`` or a ``source_*`` column.

        Returns
        -------
        ndarray [shape=(n_rows,), dtype=int64]
        """
        if self.query is None:
            return self.observed(kind)
        if kind not in self._out:
            self._out[kind] = self._query_codes(kind)
        codes: np.ndarray = self._out[kind]
        return codes

    def _query_codes(self, kind: str) -> np.ndarray:
        """Codes of ``kind`` for the query rows, in the observed rows' code sets."""
        assert self.query is not None
        if kind == "user":
            return _lookup(self.data.user_ids, self.query["msno"], self._positions("user"))
        if kind == "song":
            return _lookup(self.data.song_ids, self.query["song_id"], self._positions("song"))
        if kind in CONTEXT_COLUMNS:
            categories = self.context[kind].cat.categories
            return _lookup(categories, self.query[kind], self._positions(kind))
        return _take(self.song_codes(kind), _take(self.song_index, self.codes("song"), -1), -1)

    def _positions(self, kind: str) -> dict[Any, int]:
        """Code of every value of ``user``, ``song`` or a context column, as a dict (memoised)."""

        def make() -> dict[Any, int]:
            if kind == "user":
                values = self.data.user_ids
            elif kind == "song":
                values = self.data.song_ids
            else:
                values = self.context[kind].cat.categories
            return {value: code for code, value in enumerate(values)}

        return self.fitted(("positions", kind), make)

    @property
    def user(self) -> np.ndarray:
        """User code of every row (index into the shared ``msno`` categories), -1 if unknown."""
        return self.codes("user")

    @property
    def song(self) -> np.ndarray:
        """Song code of every row (index into the shared ``song_id`` categories)."""
        return self.codes("song")

    @property
    def artist(self) -> np.ndarray:
        """Artist code of every row, -1 when unknown."""
        return self.codes("artist")

    @property
    def genre(self) -> np.ndarray:
        """Code of the first listed genre of every row, -1 when unknown."""
        return self.codes("genre")

    @property
    def language(self) -> np.ndarray:
        """Language code of every row as an int, -1 when unknown."""
        return self.codes("language")

    @property
    def song_index(self) -> np.ndarray:
        """Row of ``data.songs`` for every song code, -1 when the song has no metadata."""
        return self.fitted("song_index", self._song_index)

    def _song_index(self) -> np.ndarray:
        """Compute :attr:`song_index` (no memo)."""
        n_cats = len(self.data.train["song_id"].cat.categories)
        index = np.full(n_cats, -1, dtype=np.int64)
        index[_codes(self.data.songs["song_id"])] = np.arange(len(self.data.songs))
        return index

    def song_codes(self, kind: str) -> np.ndarray:
        """Per-song code table (one per ``data.songs`` row) of artist, genre and language."""
        return self.fitted(("song_codes", kind), lambda: _song_level_codes(self.data.songs, kind))

    def song_attr(self, codes: np.ndarray) -> np.ndarray:
        """Map a song-level int code array (one per ``data.songs`` row) to every row; -1 missing."""
        row = _take(self.song_index, self.song, -1)
        return _take(codes, row, -1).astype(np.int64)

    def song_value(self, values: np.ndarray) -> np.ndarray:
        """Map a song-level float array to every row; NaN where the song has no metadata."""
        row = _take(self.song_index, self.song, -1)
        return _take(values, row, np.nan).astype(np.float32)

    @property
    def members(self) -> pd.DataFrame:
        """``data.members`` reindexed by user code (one row per ``msno`` category)."""
        return self.fitted("members", self._members)

    def _members(self) -> pd.DataFrame:
        """Compute :attr:`members` (no memo)."""
        n_users = len(self.data.train["msno"].cat.categories)
        table = self.data.members.copy()
        table.index = _codes(table["msno"])
        table = table[table.index >= 0]
        table = table[~table.index.duplicated()]
        return table.reindex(np.arange(n_users))

    def _levels(self, kind: str) -> int:
        """Number of codes ``kind`` can take (one more than the largest code)."""
        return self.fitted(("levels_of", kind), lambda: self._count_levels(kind))

    def _count_levels(self, kind: str) -> int:
        """Compute :meth:`_levels` (no memo)."""
        if kind == "user":
            return len(self.data.user_ids)
        if kind == "song":
            return len(self.data.song_ids)
        if kind in CONTEXT_COLUMNS:
            return len(self.context[kind].cat.categories)
        table = self.song_codes(kind)
        return int(table.max()) + 1 if table.size else 1

    def _raw_key(self, kinds: tuple[str, ...], codes: list[np.ndarray]) -> np.ndarray:
        """Mixed-radix int64 key of a tuple of code arrays; -1 where any part is missing."""
        raw = np.zeros(codes[0].shape[0], dtype=np.int64)
        missing = np.zeros(codes[0].shape[0], dtype=bool)
        radix = 1
        for kind, c in zip(kinds, codes, strict=True):
            levels = self._levels(kind) + 1
            radix *= levels
            assert radix < 2**62, f"key {kinds} overflows int64"
            missing |= c < 0
            raw = raw * levels + (c + 1)
        raw[missing] = -1
        return raw

    def key_table(self, *kinds: str) -> _KeyTable:
        """Distinct tuples of ``kinds`` over the observed rows, with their counts."""
        return self.fitted(("keys", kinds), lambda: self._key_table(kinds))

    def _key_table(self, kinds: tuple[str, ...]) -> _KeyTable:
        """Compute :meth:`key_table` (no memo)."""
        raw = self._raw_key(kinds, [self.observed(k) for k in kinds])
        ok = raw >= 0
        position, uniques = pd.factorize(raw[ok])
        observed = np.full(raw.shape[0], -1, dtype=np.int64)
        observed[ok] = position
        counts = np.bincount(position, minlength=len(uniques)).astype(np.float64)
        return _KeyTable(uniques=np.asarray(uniques), counts=counts, observed=observed)

    def keys(self, *kinds: str) -> np.ndarray:
        """Position of every returned row's tuple in :meth:`key_table`; -1 missing, -2 unseen."""
        table = self.key_table(*kinds)
        if self.query is None:
            return table.observed
        if ("keys", kinds) not in self._out:
            raw = self._raw_key(kinds, [self.codes(k) for k in kinds])
            self._out[("keys", kinds)] = table.lookup(raw)
        keys: np.ndarray = self._out[("keys", kinds)]
        return keys

    def count(self, *kinds: str) -> np.ndarray:
        """Occurrences of every row's tuple of ``kinds`` over the rows; NaN where one is missing.

        An observed row counts the observed rows; a query row counts them and itself.
        """
        table = self.key_table(*kinds)
        keys = self.keys(*kinds)
        found = _take(table.counts, keys, 0.0)
        if self.query is not None:
            found = found + 1.0
        return np.where(keys == -1, np.nan, found).astype(np.float32)

    def so_far(self, *kinds: str) -> np.ndarray:
        """How many earlier observed rows share every row's tuple; NaN where one is missing."""
        keys = self.keys(*kinds)
        if self.query is None:
            so_far = pd.Series(keys).groupby(keys).cumcount().to_numpy().astype(np.float32)
        else:
            so_far = _take(self.key_table(*kinds).counts, keys, 0.0)
        return np.where(keys == -1, np.nan, so_far).astype(np.float32)

    def rate(self, *kinds: str) -> np.ndarray:
        """Leak-free smoothed replay rate of each row's tuple of ``kinds`` (see target_rate)."""
        if self.folds is None or self.labels is None:
            raise InputError(
                "replay rates need labels and folds: build them through build_features"
            )
        table = self.key_table(*kinds)
        if self.query is None:
            return target_rate(table.observed, self.labels, self.folds, smoothing=RATE_SMOOTHING)

        # query rows: the rate fitted on all fitting rows, the prior for unseen tuples
        folds, labels = self.folds, self.labels
        rate, prior = self.fitted(
            ("rate", kinds),
            lambda: fit_rate(
                table.observed,
                labels,
                folds.fit_rows(),
                n_keys=len(table.uniques),
                smoothing=RATE_SMOOTHING,
            ),
        )
        return _take(rate, self.keys(*kinds), prior).astype(np.float32)

    def row_position(self) -> np.ndarray:
        """Position of every row in time order, 0 for the first observed row, 1 for the last."""
        if self.query is not None:
            return np.ones(self.n_rows, dtype=np.float32)
        return (np.arange(self.n_rows) / max(self.n_rows - 1, 1)).astype(np.float32)

    def capped(self, name: str, kind: str, table: np.ndarray | None = None) -> pd.Categorical[Any]:
        """Categorical of every row's code, keeping the levels most frequent over observed rows.

        Parameters
        ----------
        name : str
            Name under which the kept levels are memoised.
        kind : str
            Code kind of the rows (see :meth:`codes`).
        table : ndarray [shape=(n_levels_of_kind,), dtype=int] or None, optional (default=None)
            Code per ``kind`` code (e.g. the city of every user); None takes the codes as they are.

        Returns
        -------
        pd.Categorical
            The :attr:`max_categories` most frequent levels, by their code; others missing.
        """

        def codes_of(codes: np.ndarray) -> np.ndarray:
            return codes if table is None else _take(table, codes, -1).astype(np.int64)

        keep, dtype = self.fitted(
            ("levels", name),
            lambda: _level_dtype(_kept_levels(codes_of(self.observed(kind)), self.max_categories)),
        )
        return _as_capped(codes_of(self.codes(kind)), keep, dtype)


def _codes(series: pd.Series) -> np.ndarray:
    """Integer codes of a categorical (or factorised other) series, -1 for missing."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.cat.codes.to_numpy().astype(np.int64)
    codes, _ = pd.factorize(series)
    return codes.astype(np.int64)


def _lookup(categories: pd.Index, values: pd.Series, table: dict[Any, int]) -> np.ndarray:
    """Position of each value in ``categories`` (``table`` maps value to position), -1 if absent."""
    # a categorical of the same categories (the same object: instant) already holds the codes
    if isinstance(values.dtype, pd.CategoricalDtype) and values.dtype.categories.equals(categories):
        return values.cat.codes.to_numpy().astype(np.int64)
    return np.fromiter((table.get(v, -1) for v in values.astype(object)), np.int64, len(values))


def _take(table: np.ndarray, index: np.ndarray, fill: float) -> np.ndarray:
    """``table[index]`` with ``fill`` where ``index`` is negative or past the end of the table."""
    if table.size == 0:
        return np.full(index.shape[0], fill)
    ok = (index >= 0) & (index < table.shape[0])
    return np.where(ok, table[np.where(ok, index, 0)], fill)


def _song_level_codes(songs: pd.DataFrame, kind: str) -> np.ndarray:
    """Code of ``artist``, first ``genre`` or ``language`` of every ``songs`` row, -1 missing."""
    if kind == "artist":
        return _codes(songs["artist_name"])
    if kind == "genre":
        genre_ids = songs["genre_ids"].astype("category")
        firsts = pd.Series(genre_ids.cat.categories.astype(str)).str.split("|").str[0]
        first_codes, _ = pd.factorize(firsts)
        return _take(first_codes, genre_ids.cat.codes.to_numpy(), -1).astype(np.int64)
    if kind == "language":
        lang = songs["language"].to_numpy(dtype=np.float64)
        codes, _ = pd.factorize(pd.Series(lang))
        return codes.astype(np.int64)
    raise InputError(f"kind={kind!r}: expected one of user, song, artist, genre, language")


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


def _kept_levels(codes: np.ndarray, max_categories: int) -> np.ndarray:
    """The ``max_categories`` most frequent codes, in code order."""
    ok = codes >= 0
    counts = np.bincount(codes[ok], minlength=1)
    keep = np.argsort(-counts, kind="stable")[:max_categories]
    return np.sort(keep[counts[keep] > 0])


def _level_dtype(keep: np.ndarray) -> tuple[np.ndarray, pd.CategoricalDtype]:
    """The kept codes and the categorical dtype whose levels they are (``[0]`` when none)."""
    return keep, pd.CategoricalDtype(pd.Index(keep if keep.size else [0]))


def _as_capped(
    codes: np.ndarray, keep: np.ndarray, dtype: pd.CategoricalDtype | None = None
) -> pd.Categorical[Any]:
    """Categorical whose levels are the codes ``keep``; other codes become missing."""
    dtype = _level_dtype(keep)[1] if dtype is None else dtype
    if keep.size == 0:
        return pd.Categorical.from_codes(np.full(codes.shape[0], -1), dtype=dtype)

    # position of each row's code among the kept ones, -1 when dropped or missing
    pos = np.minimum(np.searchsorted(keep, codes), keep.size - 1)
    hit = (codes >= 0) & (keep[pos] == codes)
    return pd.Categorical.from_codes(np.where(hit, pos, -1), dtype=dtype)


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
    build: Callable[[FeatureContext], Columns]
    label_derived: bool


Builder = Callable[["FeatureContext"], Columns]
FEATURE_GROUPS: dict[str, FeatureGroup] = {}


def register_group(name: str, *, label_derived: bool) -> Callable[[Builder], Builder]:
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

    def decorate(build: Builder) -> Builder:
        FEATURE_GROUPS[name] = FeatureGroup(name=name, build=build, label_derived=label_derived)
        return build

    return decorate


@register_group("counts", label_derived=False)
def _counts(ctx: FeatureContext) -> Columns:
    """Popularity counts over train and test, and the time-ish row positions."""
    # single keys and pairs
    keys = {
        "user": ("user",),
        "song": ("song",),
        "artist": ("artist",),
        "genre": ("genre",),
        "tab": (TAB,),
        "screen": (SCREEN,),
        "type": (TYPE,),
        "user_song": ("user", "song"),
        "user_artist": ("user", "artist"),
        "user_genre": ("user", "genre"),
        "user_type": ("user", TYPE),
        "user_tab": ("user", TAB),
        "song_type": ("song", TYPE),
    }
    out = {f"cnt_{name}": ctx.count(*kinds) for name, kinds in keys.items()}

    # shares of the user's plays
    out["share_user_artist"] = out["cnt_user_artist"] / out["cnt_user"]
    out["share_user_type"] = out["cnt_user_type"] / out["cnt_user"]

    # row order is time order: position, plays so far and plays left
    out["row_pos"] = ctx.row_position()
    out["user_so_far"] = ctx.so_far("user")
    out["user_so_far_frac"] = out["user_so_far"] / out["cnt_user"]
    out["song_so_far"] = ctx.so_far("song")
    out["user_artist_so_far"] = ctx.so_far("user", "artist")
    return out


def _member_tables(ctx: FeatureContext) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-user numbers and categorical codes of the ``member`` group."""
    members = ctx.members
    registered = members["registration_init_time"]
    expires = members["expiration_date"]
    reference = registered.max()
    numbers = {
        "age": clean_age(members["bd"].fillna(0).to_numpy()),
        "tenure_days": (expires - registered).dt.days.to_numpy(dtype=np.float32),
        "days_to_expiry": (expires - reference).dt.days.to_numpy(dtype=np.float32),
        "days_registered": (reference - registered).dt.days.to_numpy(dtype=np.float32),
    }
    codes = {
        col: _codes(members[col].astype("category")) for col in ("city", "registered_via", "gender")
    }
    return numbers, codes


@register_group("member", label_derived=False)
def _member(ctx: FeatureContext) -> Columns:
    """Member attributes: cleaned age, tenure, days to expiry, city, registered_via, gender."""
    # per-user values first, then spread to rows
    numbers, codes = ctx.fitted("member", lambda: _member_tables(ctx))
    out: dict[str, object] = {k: _take(v, ctx.user, np.nan) for k, v in numbers.items()}

    # small categoricals
    for col, per_user in codes.items():
        out[col] = ctx.capped(f"member_{col}", "user", per_user)
    return out


def _song_tables(ctx: FeatureContext) -> dict[str, np.ndarray]:
    """Per-song numbers of the ``song`` group (one per ``data.songs`` row)."""
    songs = ctx.data.songs

    # counts of '|'-separated names, computed once per distinct string
    def n_parts(col: str) -> np.ndarray:
        series = songs[col].astype("category")
        per_cat = pd.Series(series.cat.categories.astype(str)).str.count(r"\|").to_numpy() + 1
        codes = series.cat.codes.to_numpy()
        return _take(per_cat, codes, 0).astype(np.float32)

    return {
        "song_length": songs["song_length"].to_numpy(dtype=np.float32),
        "genre_count": n_parts("genre_ids"),
        "composer_count": n_parts("composer"),
        "lyricist_count": n_parts("lyricist"),
    }


@register_group("song", label_derived=False)
def _song(ctx: FeatureContext) -> Columns:
    """Song metadata: length, genre, language, credits counts and frequent artists."""
    # numbers by song, then frequent levels as categoricals
    numbers = ctx.fitted("song", lambda: _song_tables(ctx))
    out: dict[str, object] = {name: ctx.song_value(values) for name, values in numbers.items()}
    for name, kind in (("genre_first", "genre"), ("language", "language"), ("artist", "artist")):
        out[name] = ctx.capped(name, kind)
    return out


def _isrc_tables(ctx: FeatureContext) -> dict[str, np.ndarray]:
    """Year, country and registrant codes of the ISRC, by song code."""
    # decode per song of song_extra_info
    extra = ctx.data.extra
    isrc = extra["isrc"].astype("string").str.upper()
    year2 = pd.to_numeric(isrc.str.slice(5, 7), errors="coerce").to_numpy(dtype=np.float64)
    year = np.where(year2 > 30, 1900 + year2, 2000 + year2).astype(np.float32)
    country, _ = pd.factorize(isrc.str.slice(0, 2))
    registrant, _ = pd.factorize(isrc.str.slice(0, 5))

    # by song code
    n_cats = len(ctx.data.train["song_id"].cat.categories)
    index = np.full(n_cats, -1, dtype=np.int64)
    index[_codes(extra["song_id"])] = np.arange(len(extra))
    return {
        "year": _take(year, index, np.nan).astype(np.float32),
        "country": _take(country, index, -1).astype(np.int64),
        "registrant": _take(registrant, index, -1).astype(np.int64),
    }


@register_group("isrc", label_derived=False)
def _isrc(ctx: FeatureContext) -> Columns:
    """Country, registrant and year decoded from the ISRC (``CCXXXYYNNNNN``)."""
    tables = ctx.fitted("isrc", lambda: _isrc_tables(ctx))
    out: dict[str, object] = {"isrc_year": _take(tables["year"], ctx.song, np.nan)}
    for name in ("country", "registrant"):
        out[f"isrc_{name}"] = ctx.capped(f"isrc_{name}", "song", tables[name])
    return out


@register_group("context", label_derived=False)
def _context(ctx: FeatureContext) -> Columns:
    """The three ``source_*`` columns as categoricals."""
    return {c: ctx.capped(c, c) for c in CONTEXT_COLUMNS}


@register_group("target_stats", label_derived=True)
def _target_stats(ctx: FeatureContext) -> Columns:
    """Leak-free smoothed replay rates of users, songs, artists and their context pairs."""
    if ctx.folds is None or ctx.labels is None:
        raise InputError("target_stats needs labels and folds: build it through build_features")
    keys = {
        "user": ("user",),
        "song": ("song",),
        "artist": ("artist",),
        "genre": ("genre",),
        "user_type": ("user", TYPE),
        "user_tab": ("user", TAB),
        "user_screen": ("user", SCREEN),
        "user_artist": ("user", "artist"),
        "user_genre": ("user", "genre"),
        "user_language": ("user", "language"),
        "song_type": ("song", TYPE),
        "artist_type": ("artist", TYPE),
        "context": (TAB, SCREEN, TYPE),
    }
    return {f"rate_{name}": ctx.rate(*kinds) for name, kinds in keys.items()}


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


@dataclass(frozen=True)
class CFFactors:
    """Truncated-SVD factors of the user-item occurrences of the observed rows.

    Attributes
    ----------
    user : ndarray [shape=(n_factor_users, rank), dtype=float32]
        Factor of every user code below ``n_factor_users``.
    item : ndarray [shape=(n_items, rank), dtype=float32]
        Factor of every item that occurs.
    item_codes : ndarray [shape=(n_items,), dtype=int64]
        Item code (song or artist code) of each row of ``item``, sorted.
    """

    user: np.ndarray
    item: np.ndarray
    item_codes: np.ndarray

    def item_rows(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The factor of each item code (zero where unknown) and a mask of the known ones."""
        pos = np.minimum(np.searchsorted(self.item_codes, codes), self.item_codes.size - 1)
        known = (codes >= 0) & (self.item_codes[pos] == codes)
        return np.where(known[:, None], self.item[pos], 0.0).astype(np.float32), known

    def user_rows(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The factor of each user code (zero where unknown) and a mask of the known ones."""
        known = (codes >= 0) & (codes < self.user.shape[0])
        return np.where(known[:, None], self.user[np.where(known, codes, 0)], 0.0), known


def cf_factors(ctx: FeatureContext, kind: str = "song") -> CFFactors:
    """The ``cf`` group's factors of user-``kind`` occurrences (``song`` or ``artist``), memoised.

    Parameters
    ----------
    ctx : FeatureContext
        The context; its memo keeps the factors.
    kind : str, optional (default="song")
        ``song`` or ``artist``.

    Returns
    -------
    CFFactors
    """

    def make() -> CFFactors:
        user_f, item_f, item_index = _factors(
            ctx.observed("user"), ctx.observed(kind), ctx.svd_rank, ctx.seed
        )
        return CFFactors(user=user_f, item=item_f, item_codes=item_index.astype(np.int64))

    return ctx.fitted(("svd", kind), make)


def _user_history(ctx: FeatureContext, kind: str) -> np.ndarray:
    """Sum of the item factors of every user's observed rows [shape=(n_users, rank)]."""
    factors = cf_factors(ctx, kind)
    row_item, _ = factors.item_rows(ctx.observed(kind))
    user = ctx.observed("user")
    history = np.zeros((len(ctx.data.user_ids), factors.item.shape[1]), dtype=np.float64)
    np.add.at(history, user[user >= 0], row_item[user >= 0])
    return history


@register_group("cf", label_derived=False)
def _cf(ctx: FeatureContext) -> Columns:
    """Collaborative factors from occurrences: user-item dot products and history cosines."""
    out: dict[str, np.ndarray] = {}
    for name in ("song", "artist"):
        # the factors of the user-item occurrences over the observed rows
        factors = cf_factors(ctx, name)
        row_item, known = factors.item_rows(ctx.codes(name))
        row_user, _ = factors.user_rows(ctx.user)

        # dot with the user's factor, cosine with the user's earlier items
        dot = np.einsum("ij,ij->i", row_user, row_item).astype(np.float32)
        out[f"svd_user_{name}_dot"] = np.where(known, dot, np.nan).astype(np.float32)
        if ctx.query is None:
            cos = _history_cosine(ctx.user, row_item)
        else:
            history = ctx.fitted(("history", name), partial(_user_history, ctx, name))
            cos = _row_cosine(_take_rows(history, ctx.user), row_item)
        out[f"svd_history_{name}_cos"] = np.where(known, cos, np.nan).astype(np.float32)
        if name == "song":
            out["svd_song_norm"] = np.where(known, np.linalg.norm(row_item, axis=1), np.nan)
    return {k: v.astype(np.float32) for k, v in out.items()}


def _take_rows(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows ``table[index]``, zero rows where ``index`` is negative or past the end."""
    ok = (index >= 0) & (index < table.shape[0])
    return np.where(ok[:, None], table[np.where(ok, index, 0)], 0.0)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two matrices; NaN where either row is (nearly) zero."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    a_sq = np.einsum("ij,ij->i", a, a)
    b_sq = np.einsum("ij,ij->i", b, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / np.sqrt(a_sq * b_sq)
    cos[(a_sq <= 1e-12) | (b_sq <= 1e-12)] = np.nan
    return cos.astype(np.float32)


def taste_profiles(
    ctx: FeatureContext, rows: np.ndarray | None = None, *, space: str = "raw", label: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Every user's taste profile: the mean unit vector of the songs they replayed in ``rows``.

    With ``label=0`` the same for the songs they played only once.

    Parameters
    ----------
    ctx : FeatureContext
        A context with ``song_vectors`` and labels (and folds when ``rows`` is None).
    rows : ndarray [shape=(n,), dtype=int] or None, optional (default=None)
        Observed rows whose labels may be read; None takes all fitting rows.
    space : str, optional (default="raw")
        ``raw`` for the vectors as stored, ``centered`` for them minus their mean
        (:attr:`SongVectors.centered`), ``listener`` for the listener space
        (:attr:`SongVectors.by_listener`).
    label : int, optional (default=1)
        Whose songs: 1 for the replayed ones (the taste profile), 0 for those played once.

    Returns
    -------
    profiles : ndarray [shape=(n_users, dim), dtype=float32]
        Profile by user code, NaN rows for users without such a song that has a vector.
    has_profile : ndarray [shape=(n_users,), dtype=bool]

    Raises
    ------
    InputError
        If the context has no song vectors or no labels.
    """
    # the rows of that label among those allowed
    vectors = _require_vectors(ctx)
    if ctx.labels is None or (rows is None and ctx.folds is None):
        raise InputError("taste profiles need labels and folds: build them through build_features")
    if rows is None:
        assert ctx.folds is not None
        rows = ctx.folds.fit_rows()
    chosen = rows[ctx.labels[rows] == label]

    # mean of the unit vectors of each user's distinct songs of that label
    song_rows = _take(vectors.rows, ctx.observed("song")[chosen], -1).astype(np.int64)
    return mean_profiles(
        ctx.observed("user")[chosen], song_rows, len(ctx.data.user_ids), vectors.space(space)
    )


def seed_profile(vectors: SongVectors, song_codes: np.ndarray, *, space: str = "raw") -> np.ndarray:
    """The taste profile of a set of seed songs (the mean of their unit vectors).

    Parameters
    ----------
    vectors : SongVectors
        Song vectors by song code.
    song_codes : ndarray [shape=(n_seeds,), dtype=int]
        Song codes of the seeds; songs without a vector are ignored.
    space : str, optional (default="raw")
        ``raw``, ``centered`` or ``listener`` (see :func:`taste_profiles`).

    Returns
    -------
    ndarray [shape=(dim,), dtype=float32]
        NaN when no seed has a vector.
    """
    rows = _take(vectors.rows, np.asarray(song_codes, dtype=np.int64), -1).astype(np.int64)
    profile, _ = mean_profiles(np.zeros(rows.size, dtype=np.int64), rows, 1, vectors.space(space))
    return profile[0]


def _require_vectors(ctx: FeatureContext) -> SongVectors:
    """The context's song vectors, or an InputError saying how to provide them."""
    if ctx.song_vectors is None:
        raise InputError(
            f"group={AUDIO_GROUP!r} needs song vectors: give an index built from an embedding "
            "store (train-ranker --index DIR), or leave audio out of --groups"
        )
    return ctx.song_vectors


# the audio columns, all in the listener space (SongVectors.by_listener: the directions in which
# the songs one person plays agree, so the melody, key and mix of each recording, which fill most
# of an embedding, drop out); the first two dot a profile fitted on labels, out of fold, with
# the song's unit vector, the third the mean of the user's other plays with the song's vector
AUDIO_COLUMNS = {
    "audio_dot": "taste profile (mean unit vector of the replayed songs)",
    "audio_contrast": "taste profile minus the profile of the songs played only once",
    "audio_plays": "mean vector of the user's other plays, train and test, labels unread",
}
AUDIO_SPACE = "listener"


@register_group(AUDIO_GROUP, label_derived=True)
def _audio(ctx: FeatureContext) -> Columns:
    """How a song's audio sits with the user's taste, out of fold.

    ``audio_dot`` is the cosine between the song and the user's taste profile scaled by the
    profile's norm, which is near 1 for a user whose replays sound alike and small for a user
    who replays everything; ``audio_contrast`` dots the song with the replayed songs' profile
    minus the once-played songs' profile, the direction in which the user's replays differ from
    the rest of what they play. Both are missing when the song has no vector or the user lacks
    the songs a profile needs. ``audio_plays`` reads no label: the song's vector against the
    mean vector of every other song the user plays in train and test (what a user chooses to
    play already follows their taste), missing for a user with no other play with a vector.
    """
    vectors = _require_vectors(ctx)
    if ctx.folds is None or ctx.labels is None:
        raise InputError("the audio group needs labels and folds: build it through build_features")
    user = ctx.user
    song_rows = _take(vectors.rows, ctx.song, -1).astype(np.int64)
    space = vectors.space(AUDIO_SPACE)
    plays = ctx.fitted("audio_plays", partial(play_sums, ctx, space=AUDIO_SPACE))

    def score(liked: Profiles, other: Profiles, users: np.ndarray, songs: np.ndarray) -> np.ndarray:
        """The label columns for rows of these user indices (into the profiles) and song rows."""
        both = liked.has & other.has
        contrast = np.where(both[:, None], liked.vectors - other.vectors, 0.0)
        return np.c_[
            profile_dot(liked.vectors, liked.has, users, space, songs),
            profile_dot(contrast, both, users, space, songs),
        ]

    # observed rows: profiles from the other folds' rows (fitting rows) or all of them (others);
    # the plays profile leaves the row's own song out
    if ctx.query is None:

        def fit(rows: np.ndarray) -> Applier:
            liked = Profiles(*taste_profiles(ctx, rows, space=AUDIO_SPACE))
            other = Profiles(*taste_profiles(ctx, rows, space=AUDIO_SPACE, label=0))
            return lambda target: score(liked, other, user[target], song_rows[target])

        cols = out_of_fold(fit, ctx.folds, n_cols=2)
        sums, counts = plays
        self_dot = _take(np.einsum("ij,ij->i", space, space), song_rows, np.nan)
        other_plays = _take(counts, user, 0.0) - 1
        dots = profile_dot(sums, counts > 1, user, space, song_rows, unit_songs=False)
        cols = np.c_[cols, (dots - self_dot) / np.maximum(other_plays, 1)]
        return {name: cols[:, i].astype(np.float32) for i, name in enumerate(AUDIO_COLUMNS)}

    # query rows: profiles from all fitting rows and all plays, or the seed songs' profile
    # (which has no once-played songs, so no contrast)
    liked, other = (
        Profiles(
            *ctx.fitted(
                ("audio_profiles", label),
                partial(taste_profiles, ctx, None, space=AUDIO_SPACE, label=label),
            )
        ).rows_of(user)
        for label in (1, 0)
    )
    sums = _take_rows(plays[0], user).astype(np.float32)
    counts = _take(plays[1], user, 0.0)
    for msno, seeds in (ctx.query_seeds or {}).items():
        mine = (ctx.query["msno"].astype(object) == msno).to_numpy()
        liked.vectors[mine] = seed_profile(vectors, seeds, space=AUDIO_SPACE)
        liked.has[mine] = bool(np.isfinite(liked.vectors[mine]).all()) if mine.any() else False
        other.has[mine] = False
        seed_rows = _take(vectors.rows, np.asarray(seeds, dtype=np.int64), -1).astype(np.int64)
        seed_rows = seed_rows[seed_rows >= 0]
        sums[mine] = space[seed_rows].sum(axis=0)
        counts[mine] = seed_rows.size
    cols = score(liked, other, np.arange(len(user)), song_rows)
    means = sums / np.maximum(counts, 1)[:, None]
    dots = profile_dot(means, counts > 0, np.arange(len(user)), space, song_rows, unit_songs=False)
    cols = np.c_[cols, dots]
    return {name: cols[:, i].astype(np.float32) for i, name in enumerate(AUDIO_COLUMNS)}


def play_sums(ctx: FeatureContext, *, space: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """Sum of the vectors of every user's plays over all observed rows, and their number.

    Reads no label: train and test rows count alike, one vector per row.

    Parameters
    ----------
    ctx : FeatureContext
        A context with ``song_vectors``.
    space : str, optional (default="raw")
        ``raw``, ``centered`` or ``listener`` (see :func:`taste_profiles`).

    Returns
    -------
    sums : ndarray [shape=(n_users, dim), dtype=float32]
        By user code.
    counts : ndarray [shape=(n_users,), dtype=float64]
        Plays with a vector by user code.
    """
    # the play counts of the songs with a vector (the same matrix the listener space is fitted on)
    vectors = _require_vectors(ctx)
    codes = np.flatnonzero(vectors.rows >= 0)
    plays = listener_plays(ctx.data)[:, codes]
    matrix = np.asarray(vectors.space(space)[vectors.rows[codes]], dtype=np.float32)

    # the sums as one sparse product
    sums = np.asarray(plays @ matrix, dtype=np.float32)
    counts = np.asarray(plays.sum(axis=1), dtype=np.float64).ravel()
    return sums, counts


class Profiles(NamedTuple):
    """Profile vectors and which of them exist (from :func:`taste_profiles`)."""

    vectors: np.ndarray
    has: np.ndarray

    def rows_of(self, index: np.ndarray) -> Profiles:
        """One writable profile per entry of ``index`` (codes past the end have none)."""
        has = _take(self.has, index, False).astype(bool)
        rows = _take_rows(self.vectors, index).astype(np.float32)
        rows[~has] = 0.0
        return Profiles(rows, has)


def row_labels(data: KKBoxData) -> np.ndarray:
    """``target`` of the train rows followed by NaN for each test row (float64)."""
    n_test = 0 if data.test is None else len(data.test)
    return np.r_[data.train["target"].to_numpy(dtype=np.float64), np.full(n_test, np.nan)]


def _check_query(query: pd.DataFrame) -> None:
    """Raise an InputError when query rows lack a column."""
    missing = [c for c in QUERY_COLUMNS if c not in query.columns]
    if missing:
        raise InputError(
            f"query lacks columns={missing}; expected {list(QUERY_COLUMNS)}, one row per "
            "(user, song, context) to describe"
        )


def _memo_signature(
    data: KKBoxData, fit_mask: np.ndarray, vectors: SongVectors | None, options: tuple[int, ...]
) -> tuple[Any, ...]:
    """What a memo's content depends on: the data, the fitting rows, the vectors, the options."""
    digest = hashlib.blake2b(np.packbits(fit_mask).tobytes(), digest_size=8).hexdigest()
    return (id(data), digest, id(vectors), options)


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
    song_vectors: SongVectors | None = None,
    query: pd.DataFrame | None = None,
    query_seeds: dict[str, np.ndarray] | None = None,
    memo: dict[Any, Any] | None = None,
) -> Features:
    """Build the feature matrix of all rows (train first, then test), or of query rows.

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
        same data (e.g. the refit) builds only the label-derived groups again. Not used with
        ``query``.
    song_vectors : SongVectors or None, optional (default=None)
        Audio vectors by song code; required by the ``audio`` group.
    query : pd.DataFrame or None, optional (default=None)
        Rows to describe instead of the observed ones: ``msno``, ``song_id``,
        ``source_system_tab``, ``source_screen_name``, ``source_type`` (see the module notes).
    query_seeds : dict of str to ndarray or None, optional (default=None)
        Seed song codes by ``msno`` whose profile replaces the fitted one of that query user.
    memo : dict or None, optional (default=None)
        What the builders fitted on the observed rows; pass the same dict again with the same
        data, ``fit_mask``, vectors and options to skip refitting (the point of query calls).

    Returns
    -------
    Features
        ``(X, feature_names, categorical_names)``; ``X`` has float32 and category columns, one
        row per observed row, or per query row.

    Raises
    ------
    InputError
        If a group name is unknown, ``fit_mask`` has the wrong length or selects test rows, the
        query is malformed, or ``memo`` was filled for other data or options.
    MismatchError
        If ``song_vectors`` does not have one row per song code of ``data``.

    Examples
    --------
    >>> n = len(data.train)  # doctest: +SKIP
    >>> feats = build_features(data, fit_mask=np.arange(n) < int(0.8 * n))  # doctest: +SKIP
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
    if song_vectors is not None and song_vectors.rows.shape != (len(data.song_ids),):
        raise MismatchError(
            f"song_vectors.rows.shape={song_vectors.rows.shape}: expected ({len(data.song_ids)},), "
            "one row per song code of this data; align them with SongVectors.from_ids"
        )
    if query is not None:
        _check_query(query)
        cache = None

    # one memo per data, fitting rows and options
    memo = {} if memo is None else memo
    signature = _memo_signature(
        data, fit_mask, song_vectors, (n_folds, seed, max_categories, svd_rank)
    )
    if memo.setdefault("signature", signature) != signature:
        raise InputError(
            "memo was filled for other data, fitting rows, vectors or options; keep one memo per "
            "(data, fit_mask, song_vectors, options) or pass a fresh dict"
        )

    # one context shared by all groups
    ctx = FeatureContext(
        data=data,
        folds=memo.get("folds") or make_folds(fit_mask, n_folds=n_folds, seed=seed),
        labels=memo.get("labels", None),
        max_categories=max_categories,
        svd_rank=svd_rank,
        seed=seed,
        song_vectors=song_vectors,
        query=None if query is None else query.reset_index(drop=True),
        query_seeds=query_seeds,
        memo=memo,
    )
    if ctx.labels is None:
        ctx.labels = row_labels(data)
    memo["folds"], memo["labels"] = ctx.folds, ctx.labels

    # query rows: every group's columns straight into one frame
    if query is not None:
        return _assemble([FEATURE_GROUPS[name].build(ctx) for name in groups], ctx.n_rows)

    # observed rows: build or reuse each group
    frames = []
    for name in groups:
        group = FEATURE_GROUPS[name]
        if cache is not None and not group.label_derived and name in cache:
            frames.append(cache[name])
            continue
        started = time.perf_counter()
        frame = pd.DataFrame(group.build(ctx))
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
    X = pd.concat(frames, axis=1) if frames else pd.DataFrame(index=range(ctx.n_rows))
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    X[numeric] = X[numeric].astype(np.float32)
    return Features(X=X, feature_names=list(X.columns), categorical_names=categorical)


def _assemble(groups: list[Columns], n_rows: int) -> Features:
    """The groups' columns in one frame, numbers as float32 (built once: fast for few rows)."""
    columns: dict[str, Any] = {}
    categorical = []
    for group in groups:
        for name, values in group.items():
            if isinstance(values, pd.Categorical):
                columns[name] = values
                categorical.append(name)
            else:
                columns[name] = np.asarray(values, dtype=np.float32)
    X = pd.DataFrame(columns, index=pd.RangeIndex(n_rows))
    return Features(
        X=X, feature_names=list(X.columns), categorical_names=categorical, arrays=columns
    )


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
