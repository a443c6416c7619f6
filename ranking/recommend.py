"""Top-k recommendations for a user: candidates from three sources, ranked by the trained model.

:class:`Recommender` loads a model folder once (:meth:`Recommender.load`) and then answers
:meth:`Recommender.recommend` in milliseconds. A request goes through four stages:

1. **Candidates.** The ``n_audio`` songs nearest to the user's taste profile in the FAISS index
   (models trained with ``--index``), the ``n_cf`` songs with the largest dot product with the
   user's factor in the ``cf`` group's truncated SVD of user-song occurrences, and the
   ``n_popular`` most played songs. Songs the user already played anywhere in the observed rows
   (train and test) are removed: by the index's exclusion for the audio stage, by a filter for
   the others.
2. **Context.** Every candidate pair gets the user's most frequent ``(source_system_tab,
   source_screen_name, source_type)`` triple over their observed rows, the context in which the
   user most likely meets a song; a user without rows gets the most frequent triple overall.
3. **Features.** The pairs are query rows of :func:`ranking.features.build_features` with the
   model's groups and options: the feature code of training, statistics fitted on the model's
   data (all train rows), kept in a memo between requests.
4. **Score.** The booster's replay probability; the best ``k`` are returned as :class:`Item`.

A user the data knows nothing about (no plays, no taste profile) can be described by seed songs:
their profile is then the mean unit vector of the seeds' audio, which retrieves songs by sound,
including songs that have audio but were never played.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedding.errors import InputError, MismatchError
from retrieval.profiles import cosine

from ._log import logger
from .audio import AudioIndex
from .data import KKBoxData, load_kkbox
from .features import (
    AUDIO_GROUP,
    CONTEXT_COLUMNS,
    QUERY_COLUMNS,
    FeatureContext,
    Features,
    SongVectors,
    build_features,
    cf_factors,
    row_labels,
    seed_profile,
    taste_profiles,
)
from .train import (
    MODEL_FILE,
    PROFILE_USERS_FILE,
    PROFILES_FILE,
    check_data,
    feature_options,
    load_meta,
    model_audio,
)

# candidate sources, in the order they are merged
SOURCES = ("audio", "cf", "popular")


@dataclass(frozen=True)
class RecommenderConfig:
    """Sizes of the candidate stages.

    Attributes
    ----------
    n_audio : int
        Songs taken from the FAISS index per user.
    n_cf : int
        Songs taken from the collaborative factors per user.
    n_popular : int
        Most played songs added for every user.
    n_tags : int
        Tags shown per song.
    """

    n_audio: int = 200
    n_cf: int = 100
    n_popular: int = 50
    n_tags: int = 3


@dataclass(frozen=True)
class Item:
    """One recommended song.

    Attributes
    ----------
    song_id : str
    score : float
        Replay probability from the ranker.
    cosine : float or None
        Cosine of the song's audio with the user's taste profile; None without one of them.
    name : str or None
        Song name, where ``song_extra_info.csv`` has it.
    artist : str or None
        Artist name, where ``songs.csv`` has it.
    tags : list of (str, float)
        The strongest tags of the song's audio, where the store has tags.
    sources : tuple of str
        Candidate stages that proposed the song (see :data:`SOURCES`).
    """

    song_id: str
    score: float
    cosine: float | None
    name: str | None
    artist: str | None
    tags: list[tuple[str, float]] = field(default_factory=list)
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON-ready values; tags as ``[{"tag": ..., "score": ...}]``."""
        out = asdict(self)
        out["tags"] = [{"tag": tag, "score": round(score, 4)} for tag, score in self.tags]
        out["sources"] = list(self.sources)
        return out


@dataclass
class Ranked:
    """What the stages produced for one user (for evaluation and the CLI)."""

    songs: np.ndarray  # song codes, best first
    scores: np.ndarray  # replay probability of each
    cosines: np.ndarray  # cosine of each with the retrieval profile, NaN where missing
    candidates: np.ndarray  # every candidate song code, unranked
    sources: np.ndarray  # bit mask of the stages that proposed each ranked song


class Recommender:
    """A loaded model folder that ranks songs for users.

    Build it with :meth:`load` (a ``train-ranker`` folder) or :meth:`from_parts` (an evaluation
    model); both warm the feature memo, so later calls take milliseconds.

    Parameters
    ----------
    data : KKBoxData
        The observed rows: plays to exclude, statistics to fit features on.
    booster : lightgbm.Booster
        The ranker.
    meta : dict
        The model's ``meta.json`` (groups, features, config).
    fit_mask : ndarray [shape=(n_train,), dtype=bool]
        Train rows whose labels the label-derived features were fitted on.
    audio : AudioIndex or None
        The index and store, for models trained with ``--index``.
    vectors : SongVectors or None
        The store's vectors aligned with ``data``'s song codes.
    profiles : ndarray [shape=(n_users, dim)] or None
        Taste profile by user code, NaN rows for users without one.
    config : RecommenderConfig or None
        Candidate sizes; None uses the defaults.
    """

    def __init__(
        self,
        data: KKBoxData,
        booster: lgb.Booster,
        meta: dict[str, Any],
        *,
        fit_mask: np.ndarray,
        audio: AudioIndex | None = None,
        vectors: SongVectors | None = None,
        profiles: np.ndarray | None = None,
        config: RecommenderConfig | None = None,
    ) -> None:
        self.data = data
        self.booster = booster
        self.meta = meta
        self.fit_mask = np.asarray(fit_mask, dtype=bool)
        self.audio = audio
        self.vectors = vectors
        self.profiles = profiles
        self.config = config or RecommenderConfig()
        self.options = feature_options(meta)  # groups, folds, seed, ... of build_features
        self.groups: list[str] = self.options["groups"]
        self.memo: dict[Any, Any] = {}
        self._level_maps: dict[tuple[str, int], tuple[pd.Index, np.ndarray]] = {}

        # what every request needs: plays, contexts, popularity, names, audio rows
        self._user_codes = pd.Index(data.user_ids)
        self._played = _played_matrix(data)
        self._contexts = _top_contexts(data)
        self._popular = _popular_songs(data)
        self._names, self._artists = _song_texts(data)
        self._song_dtype = cast(pd.CategoricalDtype, data.train["song_id"].dtype)
        self._store_row = None if vectors is None else vectors.rows
        self._code_of_row = None
        if audio is not None:
            codes = pd.Index(data.song_ids).get_indexer(pd.Index(audio.index.ids))
            self._code_of_row = codes.astype(np.int64)
        self.warm()

    @classmethod
    def load(cls, model_dir: str | Path, *, config: RecommenderConfig | None = None) -> Recommender:
        """Load a model folder written by ``train-ranker`` for serving.

        The ranker is the folder's ``model.txt`` (refitted on all train rows), the features are
        fitted on all train rows, and the taste profiles are the folder's ``profiles.npy``.

        Parameters
        ----------
        model_dir : str or Path
            The model folder.
        config : RecommenderConfig or None, optional (default=None)
            Candidate sizes.

        Returns
        -------
        Recommender

        Raises
        ------
        InputError
            If the folder is incomplete or its data or index folder is gone.
        MismatchError
            If the data or the embedding store changed since training.

        Examples
        --------
        >>> rec = Recommender.load("models/ranker")  # doctest: +SKIP
        >>> user = "XQxgAYj3klVKjR3oxPPXYYFp4soD4TuBghkhMTD4oTw="
        >>> [item.song_id for item in rec.recommend(user)]  # doctest: +SKIP
        """
        # the model, its data and its audio
        model_dir = Path(model_dir)
        meta = load_meta(model_dir)
        data = load_kkbox(check_data(meta), show_progress=False)
        audio, vectors = model_audio(meta, data)
        booster = lgb.Booster(model_file=str(model_dir / MODEL_FILE))

        # the serving profiles, by user code
        profiles = None
        if audio is not None and vectors is not None:
            profiles = _read_profiles(model_dir, data, vectors.dim)
        fit_mask = np.ones(len(data.train), dtype=bool)
        return cls(
            data,
            booster,
            meta,
            fit_mask=fit_mask,
            audio=audio,
            vectors=vectors,
            profiles=profiles,
            config=config,
        )

    @classmethod
    def from_parts(
        cls,
        data: KKBoxData,
        booster: lgb.Booster,
        meta: dict[str, Any],
        *,
        audio: AudioIndex | None = None,
        vectors: SongVectors | None = None,
        config: RecommenderConfig | None = None,
    ) -> Recommender:
        """A recommender over ``data`` whose features and profiles are fitted on all its rows.

        Evaluation uses it with the data cut to the fitting rows and a booster trained there.

        Parameters
        ----------
        data : KKBoxData
            The observed rows.
        booster : lightgbm.Booster
            A ranker trained on features of ``data`` with ``meta``'s groups and options.
        meta : dict
            Groups, features and config, as in a model's ``meta.json``.
        audio : AudioIndex or None, optional (default=None)
            The index, when the groups include audio.
        vectors : SongVectors or None, optional (default=None)
            The index's vectors aligned with ``data``; None aligns them.
        config : RecommenderConfig or None, optional (default=None)
            Candidate sizes.

        Returns
        -------
        Recommender
        """
        # profiles from every replay of the observed train rows
        if vectors is None and audio is not None:
            vectors = audio.song_vectors(data)
        profiles = None
        if vectors is not None:
            ctx = FeatureContext(data=data, labels=row_labels(data), song_vectors=vectors)
            profiles, _ = taste_profiles(ctx, np.arange(len(data.train)))
        return cls(
            data,
            booster,
            meta,
            fit_mask=np.ones(len(data.train), dtype=bool),
            audio=audio,
            vectors=vectors,
            profiles=profiles,
            config=config,
        )

    def warm(self) -> None:
        """Fit the feature memo with one request, so the next ones take milliseconds."""
        users = np.flatnonzero(np.diff(self._played.indptr) > 0)
        if users.size:
            self.rank_users([int(users[0])], k=1)

    def user_code(self, user_id: str) -> int:
        """Code of ``user_id`` in the data, -1 when the data does not know it."""
        return int(self._user_codes.get_indexer([user_id])[0])

    def knows(self, user_id: str) -> bool:
        """True when the data holds plays or a taste profile of ``user_id``."""
        code = self.user_code(user_id)
        return code >= 0 and (self._n_plays(code) > 0 or self._has_profile(code))

    def recommend(
        self, user_id: str, k: int = 10, seed_songs: Sequence[str] | None = None
    ) -> list[Item]:
        """The ``k`` songs with the highest replay probability for ``user_id``.

        Parameters
        ----------
        user_id : str
            The user's ``msno``.
        k : int, optional (default=10)
            Number of songs.
        seed_songs : sequence of str or None, optional (default=None)
            Song ids whose audio describes the user's taste: required for a user the data does
            not know, and replacing the stored profile of a known one.

        Returns
        -------
        list of Item
            Best first; fewer than ``k`` when there are fewer candidates.

        Raises
        ------
        InputError
            If the user is unknown and no seed songs are given, ``k`` < 1, or the seed songs are
            unknown, lack audio, or the model has no index.
        """
        # the user and their profile
        if k < 1:
            raise InputError(f"k={k}: expected at least one song")
        seeds: dict[str, np.ndarray] = {}
        if seed_songs:
            seeds[user_id] = self._seed_codes(seed_songs)
        elif not self.knows(user_id):
            raise InputError(
                f"user={user_id!r} is unknown to the model's data (no plays, no taste profile); "
                "give seed songs (rank --seed-songs ID,ID,...) to describe their taste"
            )

        # rank and describe
        return self.items(self._rank([user_id], k=k, seeds=seeds)[0])

    def items(self, ranked: Ranked) -> list[Item]:
        """The ranked songs of one user as :class:`Item` records."""
        ids = self.data.song_ids
        tags: list[list[tuple[str, float]]] = [[] for _ in ranked.songs]
        if self.audio is not None and self._store_row is not None:
            rows = self._store_row[ranked.songs]
            tags = self.audio.top_tags(rows, self.config.n_tags)
        out = []
        for i, code in enumerate(ranked.songs):
            cos = float(ranked.cosines[i])
            out.append(
                Item(
                    song_id=str(ids[code]),
                    score=float(ranked.scores[i]),
                    cosine=None if np.isnan(cos) else cos,
                    name=self._names[code],
                    artist=self._artists[code],
                    tags=tags[i],
                    sources=tuple(s for b, s in enumerate(SOURCES) if ranked.sources[i] >> b & 1),
                )
            )
        return out

    def rank_users(self, user_codes: Sequence[int], k: int, *, batch: int = 64) -> list[Ranked]:
        """Rank for many known users at once (evaluation); same stages as :meth:`recommend`.

        Parameters
        ----------
        user_codes : sequence of int
            User codes of the data.
        k : int
            Songs kept per user.
        batch : int, optional (default=64)
            Users scored per feature call.

        Returns
        -------
        list of Ranked
        """
        ids = [str(self.data.user_ids[c]) for c in user_codes]
        out: list[Ranked] = []
        for start in range(0, len(ids), batch):
            out.extend(self._rank(ids[start : start + batch], k=k))
        return out

    def score_rows(self, rows: pd.DataFrame) -> np.ndarray:
        """Replay probability of given (user, song, context) rows, as query rows.

        Parameters
        ----------
        rows : pd.DataFrame
            Columns ``msno``, ``song_id`` and the three ``source_*`` columns.

        Returns
        -------
        ndarray [shape=(len(rows),), dtype=float64]
        """
        return self._predict(self._features(rows.reset_index(drop=True)[list(QUERY_COLUMNS)], None))

    def _n_plays(self, code: int) -> int:
        """Observed rows of user ``code``."""
        if code < 0 or code >= self._played.shape[0]:
            return 0
        return int(self._played.indptr[code + 1] - self._played.indptr[code])

    def _has_profile(self, code: int) -> bool:
        """True when user ``code`` has a taste profile."""
        if self.profiles is None or code < 0 or code >= self.profiles.shape[0]:
            return False
        return bool(np.isfinite(self.profiles[code]).all())

    def _seed_codes(self, seed_songs: Sequence[str]) -> np.ndarray:
        """Song codes of seed songs, checked: known songs, at least one with audio."""
        if self.vectors is None:
            raise InputError(
                "seed songs describe a taste by audio, but this model was trained without an "
                "index; retrain with train-ranker --index DIR"
            )
        codes = pd.Index(self.data.song_ids).get_indexer(pd.Index([str(s) for s in seed_songs]))
        unknown = [str(s) for s, c in zip(seed_songs, codes, strict=True) if c < 0]
        if unknown:
            raise InputError(
                f"seed_songs={unknown[:5]} are not songs of the model's data; give song_id "
                "values of songs.csv"
            )
        if not (self.vectors.rows[codes] >= 0).any():
            raise InputError(
                f"seed_songs={[str(s) for s in seed_songs][:5]} have no audio vector in the "
                "store; give songs that were embedded"
            )
        return codes.astype(np.int64)

    def _rank(
        self, user_ids: list[str], *, k: int, seeds: dict[str, np.ndarray] | None = None
    ) -> list[Ranked]:
        """Candidates, features and scores for a batch of users (ids; seeds by id)."""
        # each user's code and retrieval profile: from seeds, stored, or none
        seeds = seeds or {}
        codes = [self.user_code(u) for u in user_ids]
        dim = 0 if self.vectors is None else self.vectors.dim
        per_user = np.full((len(user_ids), dim), np.nan, dtype=np.float32)
        for i, (user_id, code) in enumerate(zip(user_ids, codes, strict=True)):
            if user_id in seeds and self.vectors is not None:
                per_user[i] = seed_profile(self.vectors, seeds[user_id])
            elif self._has_profile(code):
                assert self.profiles is not None
                per_user[i] = self.profiles[code]

        # candidates, minus what each user played and their seed songs
        excluded = [self._played_songs(c) for c in codes]
        for i, user_id in enumerate(user_ids):
            if user_id in seeds:
                excluded[i] = np.union1d(excluded[i], seeds[user_id])
        candidates, sources = self._candidates(codes, per_user, excluded, seeds, user_ids)

        # one query frame for the batch
        sizes = [c.size for c in candidates]
        if sum(sizes) == 0:
            return [_empty_ranked() for _ in user_ids]
        feats = self._features(self._query(user_ids, codes, candidates), seeds)
        scores = self._predict(feats)
        cosines = np.full(len(scores), np.nan)
        if self.vectors is not None:
            # the cosine shown beside each song: the retrieval profile against its vector
            owner = np.repeat(np.arange(len(user_ids)), sizes)
            song_rows = self.vectors.rows[np.concatenate(candidates)]
            has = np.asarray(np.isfinite(per_user).all(axis=1))  # rows without one are not read
            cosines = cosine(per_user, has, owner, self.vectors.vectors, song_rows).astype(
                np.float64
            )

        # the best k of each user
        out = []
        bounds = np.r_[0, np.cumsum(sizes)]
        for i in range(len(user_ids)):
            lo, hi = bounds[i], bounds[i + 1]
            order = np.argsort(-scores[lo:hi], kind="stable")[:k]
            out.append(
                Ranked(
                    songs=candidates[i][order],
                    scores=scores[lo:hi][order],
                    cosines=cosines[lo:hi][order],
                    candidates=candidates[i],
                    sources=sources[i][order],
                )
            )
        return out

    def _predict(self, feats: Features) -> np.ndarray:
        """The booster's replay probability of feature rows, through a float matrix.

        Categorical columns become the codes of the levels the booster was trained with (what
        LightGBM's pandas input does, without its per-call conversions).
        """
        arrays = feats.arrays or {name: feats.X[name].array for name in feats.feature_names}
        matrix = np.empty((len(feats.X), len(feats.feature_names)), dtype=np.float64)
        levels = dict(
            zip(feats.categorical_names, self.booster.pandas_categorical or [], strict=False)
        )
        for j, name in enumerate(feats.feature_names):
            cat = arrays[name]
            if name not in levels:
                matrix[:, j] = np.asarray(cat, dtype=np.float64)
                continue

            # codes in the booster's level order; unknown levels are missing
            assert isinstance(cat, pd.Categorical)
            key = (name, id(cat.categories))
            if key not in self._level_maps:
                trained = pd.Index(levels[name])
                self._level_maps[key] = (cat.categories, trained.get_indexer(cat.categories))
            _, remap = self._level_maps[key]
            codes = np.asarray(cat.codes, dtype=np.int64)
            mapped = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
            matrix[:, j] = np.where(mapped >= 0, mapped, np.nan)
        return np.asarray(self.booster.predict(matrix), dtype=np.float64)

    def _features(self, query: pd.DataFrame, seeds: dict[str, np.ndarray] | None) -> Features:
        """Features of query rows with the model's groups, checked against the model's columns."""
        audio = AUDIO_GROUP in self.groups
        feats = build_features(
            self.data,
            fit_mask=self.fit_mask,
            song_vectors=self.vectors if audio else None,
            query=query,
            query_seeds=seeds if audio and seeds else None,
            memo=self.memo,
            **self.options,
        )
        if feats.feature_names != self.meta["features"]:
            raise MismatchError(
                f"features={len(feats.feature_names)} built for serving differ from the "
                f"{len(self.meta['features'])} the model was trained on; retrain with train-ranker"
            )
        return feats

    def _played_songs(self, code: int) -> np.ndarray:
        """Song codes user ``code`` played in the observed rows."""
        if code < 0 or code >= self._played.shape[0]:
            return np.empty(0, dtype=np.int64)
        lo, hi = self._played.indptr[code], self._played.indptr[code + 1]
        return self._played.indices[lo:hi].astype(np.int64)

    def _candidates(
        self,
        user_codes: list[int],
        profiles: np.ndarray,
        excluded: list[np.ndarray],
        seeds: dict[str, np.ndarray],
        user_ids: list[str],
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Candidate song codes of each user and the stages (bit mask) that proposed each."""
        n = len(user_codes)
        found: list[list[tuple[np.ndarray, int]]] = [[] for _ in range(n)]

        # audio: nearest songs to the profile, played songs excluded by the index
        if self.audio is not None and self._code_of_row is not None and self.config.n_audio > 0:
            has = np.isfinite(profiles).all(axis=1)
            who = np.flatnonzero(has).tolist()
            if who:
                assert self._store_row is not None
                exclude = []
                for i in who:
                    rows = self._store_row[excluded[i]]
                    exclude.append(rows[rows >= 0])
                _, rows = self.audio.index.search(
                    profiles[who], self.config.n_audio, exclude=exclude
                )
                for j, i in enumerate(who):
                    codes = self._code_of_row[rows[j][rows[j] >= 0]]
                    found[i].append((codes[codes >= 0], 0))

        # cf: largest dot products with the user's factor (or the seeds' summed factors)
        if self.config.n_cf > 0:
            seed_lists = [seeds.get(u, np.empty(0, dtype=np.int64)) for u in user_ids]
            for i, codes in enumerate(self._cf_candidates(user_codes, seed_lists)):
                found[i].append((codes, 1))

        # popular songs the user has not played
        for i in range(n):
            head = self._popular[: self.config.n_popular + excluded[i].size]
            found[i].append((head[~np.isin(head, excluded[i])][: self.config.n_popular], 2))

        # merge in order of first appearance, with a bit per stage that proposed the song
        candidates, sources = [], []
        for i in range(n):
            codes = np.concatenate([c for c, _ in found[i]]).astype(np.int64)
            bits = np.concatenate([np.full(c.size, 1 << b, dtype=np.int64) for c, b in found[i]])
            keep = ~np.isin(codes, excluded[i])
            unique, first, inverse = np.unique(codes[keep], return_index=True, return_inverse=True)
            mask = np.zeros(unique.size, dtype=np.int64)
            np.bitwise_or.at(mask, inverse, bits[keep])
            order = np.argsort(first, kind="stable")
            candidates.append(unique[order])
            sources.append(mask[order])
        return candidates, sources

    def _cf_candidates(self, user_codes: list[int], seeds: list[np.ndarray]) -> list[np.ndarray]:
        """The ``n_cf`` songs with the largest factor dot product for each user."""
        ctx = FeatureContext(
            data=self.data,
            svd_rank=int(self.options["svd_rank"]),
            seed=int(self.options["seed"]),
            memo=self.memo,
        )
        factors = cf_factors(ctx, "song")
        user_rows, known = factors.user_rows(np.asarray(user_codes, dtype=np.int64))
        for i, codes in enumerate(seeds):
            if codes.size and not known[i]:
                items, ok = factors.item_rows(codes)
                user_rows[i] = items[ok].sum(axis=0)
                known[i] = bool(ok.any())
        scores = user_rows.astype(np.float32) @ factors.item.T  # (n_users, n_items)
        take = min(self.config.n_cf + 256, scores.shape[1])
        out = []
        for i in range(len(user_codes)):
            if not known[i] or take == 0:
                out.append(np.empty(0, dtype=np.int64))
                continue
            best = np.argpartition(-scores[i], take - 1)[:take]
            best = best[np.argsort(-scores[i][best], kind="stable")]
            codes = factors.item_codes[best]
            played = self._played_songs(user_codes[i])
            codes = codes[~np.isin(codes, played)][: self.config.n_cf]
            out.append(codes)
        return out

    def _query(
        self, user_ids: list[str], user_codes: list[int], candidates: list[np.ndarray]
    ) -> pd.DataFrame:
        """Query rows: each user with each candidate, in the user's most frequent context."""
        sizes = [c.size for c in candidates]
        songs = np.concatenate(candidates)
        frame: dict[str, Any] = {
            "msno": np.repeat(np.array(user_ids, dtype=object), sizes),
            "song_id": pd.Categorical.from_codes(songs, dtype=self._song_dtype),
        }
        contexts = [self._contexts.get(int(c), self._contexts[-1]) for c in user_codes]
        for j, column in enumerate(CONTEXT_COLUMNS):
            values = np.repeat(np.array([c[j] for c in contexts], dtype=object), sizes)
            frame[column] = values
        return pd.DataFrame(frame)


def _empty_ranked() -> Ranked:
    """A ranking with no songs."""
    empty = np.empty(0, dtype=np.int64)
    return Ranked(empty, np.empty(0), np.empty(0), empty, empty)


def _played_matrix(data: KKBoxData) -> sp.csr_matrix:
    """Users x songs of every observed row (train and test), as a CSR matrix of ones."""
    parts = [data.train] if data.test is None else [data.train, data.test]
    users = np.concatenate([p["msno"].cat.codes.to_numpy() for p in parts]).astype(np.int64)
    songs = np.concatenate([p["song_id"].cat.codes.to_numpy() for p in parts]).astype(np.int64)
    ok = (users >= 0) & (songs >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.int8), (users[ok], songs[ok])),
        shape=(len(data.user_ids), len(data.song_ids)),
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def _top_contexts(data: KKBoxData) -> dict[int, tuple[Any, ...]]:
    """Each user's most frequent context triple, and the overall one under key -1."""
    parts = [data.train] if data.test is None else [data.train, data.test]
    rows = pd.concat([p[["msno", *CONTEXT_COLUMNS]] for p in parts], ignore_index=True)
    rows = rows.astype({c: object for c in CONTEXT_COLUMNS})
    rows["user"] = pd.concat([p["msno"].cat.codes for p in parts], ignore_index=True).to_numpy()
    keys = list(CONTEXT_COLUMNS)

    # count triples per user; missing values stay a value of their own
    counts = rows.groupby(["user", *keys], dropna=False, observed=True).size().reset_index(name="n")
    counts = counts.sort_values(["user", "n"], ascending=[True, False], kind="stable")
    best = counts.drop_duplicates("user")
    out: dict[int, tuple[Any, ...]] = {
        int(u): tuple(_none_if_missing(v) for v in values)
        for u, *values in best[["user", *keys]].itertuples(index=False)
    }
    overall = rows.groupby(keys, dropna=False).size().sort_values(ascending=False).index[0]
    out[-1] = tuple(_none_if_missing(v) for v in overall)
    return out


def _none_if_missing(value: Any) -> Any:
    """None for a missing value, the value otherwise."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _popular_songs(data: KKBoxData) -> np.ndarray:
    """Song codes by decreasing number of observed plays."""
    parts = [data.train] if data.test is None else [data.train, data.test]
    songs = np.concatenate([p["song_id"].cat.codes.to_numpy() for p in parts]).astype(np.int64)
    counts = np.bincount(songs[songs >= 0], minlength=len(data.song_ids))
    order = np.argsort(-counts, kind="stable")
    return order[counts[order] > 0].astype(np.int64)


def _song_texts(data: KKBoxData) -> tuple[list[str | None], list[str | None]]:
    """Song name and artist name by song code, None where unknown."""
    n = len(data.song_ids)
    names: list[str | None] = [None] * n
    artists: list[str | None] = [None] * n
    for code, name in zip(
        data.extra["song_id"].cat.codes.to_numpy(), data.extra["name"].astype(object), strict=True
    ):
        if code >= 0 and isinstance(name, str):
            names[code] = name
    for code, artist in zip(
        data.songs["song_id"].cat.codes.to_numpy(),
        data.songs["artist_name"].astype(object),
        strict=True,
    ):
        if code >= 0 and isinstance(artist, str):
            artists[code] = artist
    return names, artists


def _read_profiles(model_dir: Path, data: KKBoxData, dim: int) -> np.ndarray:
    """``profiles.npy`` of a model folder as a matrix by user code (NaN rows for no profile)."""
    path, users_path = model_dir / PROFILES_FILE, model_dir / PROFILE_USERS_FILE
    if not path.is_file() or not users_path.is_file():
        raise InputError(
            f"model={str(model_dir)!r} was trained with an index but lacks {PROFILES_FILE} or "
            f"{PROFILE_USERS_FILE}; retrain with train-ranker --index DIR"
        )
    stored = np.load(path)
    users = json.loads(users_path.read_text())
    if stored.shape != (len(users), dim):
        raise MismatchError(
            f"{path}: shape={stored.shape} but expected ({len(users)}, {dim}) from "
            f"{PROFILE_USERS_FILE} and the store; retrain with train-ranker --index DIR"
        )
    codes = pd.Index(data.user_ids).get_indexer(pd.Index(users))
    profiles = np.full((len(data.user_ids), dim), np.nan, dtype=np.float32)
    profiles[codes[codes >= 0]] = stored[codes >= 0]
    logger.info("loaded taste profiles of %d users from %s", int((codes >= 0).sum()), path)
    return profiles
