"""Tests of the ranker's audio feature group and index loading (ranking.features, ranking.audio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_features import tiny_world

from embedding import write_store
from embedding.errors import InputError, MismatchError
from ranking.audio import AudioIndex
from ranking.data import KKBoxData, load_kkbox
from ranking.features import (
    AUDIO_COLUMNS,
    AUDIO_GROUP,
    DEFAULT_GROUPS,
    FEATURE_GROUPS,
    LISTENER_COMPONENTS,
    LISTENER_MIN_PLAYS,
    LISTENER_SHRINKAGE,
    QUERY_COLUMNS,
    SongVectors,
    build_features,
    listener_plays,
)
from retrieval import fit_group_projection
from retrieval.index import build_index_from_store

TAG_NAMES = ["bright", "fast", "dense"]
# the audio columns fitted on labels (the plays profile reads none)
LABEL_COLUMNS = ["audio_dot", "audio_contrast"]


def synthetic_index(world: Path, out: Path, *, dim: int = 16, seed: int = 0) -> Path:
    """A store and flat index whose vectors carry each song's audible style, plus noise.

    ``world`` is a demo world's data folder (it holds ``song_style.csv``); every song of
    ``songs.csv`` gets a vector and three tag scores. Returns the index folder.
    """
    if (out / "index" / "meta.json").is_file():
        return out / "index"
    style = pd.read_csv(world / "song_style.csv")
    songs = pd.read_csv(world / "songs.csv", usecols=["song_id"])
    style = style[style["song_id"].isin(songs["song_id"])]
    rng = np.random.default_rng(seed)
    audible = style.iloc[:, 1:].to_numpy(dtype=np.float64)
    vectors = audible @ rng.normal(size=(audible.shape[1], dim))
    vectors += 0.5 * rng.normal(size=vectors.shape) + 3.0
    tags = 1.0 / (1.0 + np.exp(-audible[:, :3]))
    store = write_store(
        out / "store",
        style["song_id"].tolist(),
        vectors.astype(np.float32),
        {"encoder": "synthetic"},
        tags=tags,
        tag_names=TAG_NAMES,
    )
    build_index_from_store(store, kind="flat", show_progress=False).save(out / "index")
    return out / "index"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_world(tmp_path_factory)


@pytest.fixture(scope="module")
def data(world: Path) -> KKBoxData:
    return load_kkbox(world, show_progress=False)


@pytest.fixture(scope="module")
def audio(world: Path, tmp_path_factory: pytest.TempPathFactory) -> AudioIndex:
    return AudioIndex.load(synthetic_index(world, tmp_path_factory.mktemp("audio")))


@pytest.fixture(scope="module")
def fit_mask(data: KKBoxData) -> np.ndarray:
    n = len(data.train)
    return np.arange(n) < int(0.8 * n)


def test_audio_is_label_derived_and_not_a_default() -> None:
    assert FEATURE_GROUPS[AUDIO_GROUP].label_derived
    assert AUDIO_GROUP not in DEFAULT_GROUPS


def test_audio_needs_song_vectors(data: KKBoxData, fit_mask: np.ndarray) -> None:
    with pytest.raises(InputError, match="needs song vectors"):
        build_features(data, fit_mask=fit_mask, groups=[AUDIO_GROUP])


def test_song_vectors_follow_the_song_codes(data: KKBoxData, audio: AudioIndex) -> None:
    vectors = audio.song_vectors(data)
    assert vectors.rows.shape == (len(data.song_ids),)
    code = int(np.flatnonzero(vectors.rows >= 0)[0])
    song_id = str(data.song_ids[code])
    assert np.array_equal(
        vectors.vectors[vectors.rows[code]], audio.store.vectors[audio.store.row_of(song_id)]
    )
    # songs missing from songs.csv have no audio in this store
    assert (vectors.rows < 0).sum() == len(data.song_ids) - len(audio.store)


def test_listener_plays_count_train_and_test(data: KKBoxData) -> None:
    plays = listener_plays(data)
    assert plays.shape == (len(data.user_ids), len(data.song_ids))
    assert data.test is not None
    assert plays.sum() == len(data.train) + len(data.test)

    # one user's row holds their songs, as often as they played them, replays or not
    user = data.train["msno"].iloc[0]
    frames = pd.concat([data.train, data.test])
    theirs = frames.loc[frames["msno"] == user, "song_id"].cat.codes.value_counts()
    row = plays[data.train["msno"].cat.codes.iloc[0]].toarray().ravel()
    assert row.sum() == theirs.sum()
    np.testing.assert_array_equal(row[theirs.index.to_numpy()], theirs.to_numpy())


def test_the_audio_space_follows_the_listeners(
    data: KKBoxData, audio: AudioIndex, caplog: pytest.LogCaptureFixture
) -> None:
    vectors = audio.song_vectors(data)
    space = vectors.space("listener")
    assert space.shape == (vectors.vectors.shape[0], LISTENER_COMPONENTS)

    # the projection of the songs' vectors with their listeners (as fitted by retrieval)
    assert vectors.listeners is not None
    codes = np.flatnonzero(vectors.rows >= 0)
    proj = fit_group_projection(
        vectors.vectors[vectors.rows[codes]],
        vectors.listeners[:, codes],
        n_components=LISTENER_COMPONENTS,
        shrinkage=LISTENER_SHRINKAGE,
        min_group_size=LISTENER_MIN_PLAYS,
    )
    np.testing.assert_allclose(
        np.abs(space), np.abs(proj.transform(vectors.vectors)), rtol=1e-5, atol=1e-5
    )

    # without plays the space is the centred one, and the log says so
    plain = SongVectors(vectors.vectors, vectors.rows)
    with caplog.at_level("WARNING", logger="encore.ranking"):
        assert np.array_equal(plain.space("listener"), plain.space("centered"))
    assert "no plays given" in caplog.text

    # plays of another data set's songs are refused by name
    with pytest.raises(InputError, match=r"listeners.shape=\(3, 2\)"):
        SongVectors.from_ids(data.song_ids, ["a"], vectors.vectors[:1], listeners=np.eye(3, 2))


def test_plays_profile_leaves_the_row_out(data: KKBoxData, audio: AudioIndex) -> None:
    vectors = audio.song_vectors(data)
    fit_mask = np.arange(len(data.train)) < int(0.8 * len(data.train))
    X = build_features(data, fit_mask=fit_mask, groups=[AUDIO_GROUP], song_vectors=vectors).X
    space = vectors.space("listener")

    # the mean vector of the user's other plays (train and test) against the song's vector
    user = np.r_[data.train["msno"].cat.codes, data.test["msno"].cat.codes]
    row_of = vectors.rows[np.r_[data.train["song_id"].cat.codes, data.test["song_id"].cat.codes]]
    for row in (5, len(data.train) - 3, len(user) - 1):
        others = np.flatnonzero((user == user[row]) & (row_of >= 0))
        others = others[others != row]
        expected = space[row_of[others]].mean(axis=0) @ space[row_of[row]]
        assert X["audio_plays"].iloc[row] == pytest.approx(expected, rel=1e-4, abs=1e-5), row


def test_wrongly_sized_vectors_are_refused(data: KKBoxData, fit_mask: np.ndarray) -> None:
    bad = SongVectors(vectors=np.ones((3, 4), dtype=np.float32), rows=np.zeros(3, dtype=np.int64))
    with pytest.raises(MismatchError, match="song_vectors.rows.shape"):
        build_features(data, fit_mask=fit_mask, groups=[AUDIO_GROUP], song_vectors=bad)


def test_missing_vectors_give_nan_not_zero(data: KKBoxData, fit_mask: np.ndarray) -> None:
    # vectors for every song but the most played one
    rng = np.random.default_rng(0)
    n_songs = len(data.song_ids)
    rows = np.arange(n_songs)
    top = int(np.bincount(data.train["song_id"].cat.codes).argmax())
    rows[top] = -1
    vectors = SongVectors(rng.normal(size=(n_songs, 8)).astype(np.float32) + 1.0, rows)
    X = build_features(data, fit_mask=fit_mask, groups=[AUDIO_GROUP], song_vectors=vectors).X
    assert list(X.columns) == list(AUDIO_COLUMNS)

    # rows of the song without a vector: missing in every audio column
    song = np.r_[data.train["song_id"].cat.codes, data.test["song_id"].cat.codes]
    assert X.loc[song == top].isna().all().all()

    # a user whose replays all lack vectors has no profile: missing, not a zero cosine
    user = np.r_[data.train["msno"].cat.codes, data.test["msno"].cat.codes]
    fit_users = data.train["msno"].cat.codes.to_numpy()[fit_mask]
    replayed = np.unique(fit_users[data.train["target"].to_numpy()[fit_mask] == 1])
    never = np.setdiff1d(np.unique(user), replayed)
    assert never.size, "the tiny world should hold users without a replay in the fitting rows"
    test_rows = np.isin(user, never) & (np.arange(user.size) >= len(data.train))
    assert X.loc[test_rows, LABEL_COLUMNS].isna().all().all()

    # the plays profile reads no label: those users have one all the same
    assert X.loc[test_rows, "audio_plays"].notna().mean() > 0.9

    # everyone else gets a dot in [-1, 1] (a mean of unit vectors against a unit vector)
    known = X["audio_dot"].dropna()
    assert len(known) > 0.8 * len(X) and known.between(-1, 1).all()
    assert (X["audio_dot"] != 0).all()

    # the contrast needs both replayed and once-played songs, so it is missing more often
    assert X["audio_contrast"].notna().sum() <= X["audio_dot"].notna().sum()


def test_audio_columns_separate_replays(
    data: KKBoxData, audio: AudioIndex, fit_mask: np.ndarray
) -> None:
    vectors = audio.song_vectors(data)
    X = build_features(data, fit_mask=fit_mask, groups=[AUDIO_GROUP], song_vectors=vectors).X
    y = data.train["target"].to_numpy()
    valid = ~fit_mask
    for column in AUDIO_COLUMNS:
        score = X[column].to_numpy()[: len(y)]
        replayed = np.nanmean(score[valid & (y == 1)])
        skipped = np.nanmean(score[valid & (y == 0)])
        assert replayed > skipped + 0.01, column


def test_query_rows_match_an_appended_row(data: KKBoxData, audio: AudioIndex) -> None:
    """A query row gets the features of the same row appended alone after the observed ones."""
    # the data without its last test row, and the full data with it
    short = KKBoxData(**{**data.__dict__, "test": data.test.iloc[:-1].reset_index(drop=True)})
    groups = ["counts", "member", "song", "isrc", "context", "target_stats", AUDIO_GROUP]
    fit_all = np.ones(len(data.train), dtype=bool)
    # one listener space for both: it is fitted on the plays a data set holds, and the appended
    # row would add one
    vectors = audio.song_vectors(short)
    full = build_features(data, fit_mask=fit_all, groups=groups, song_vectors=vectors).X.iloc[[-1]]
    query = data.test.iloc[[-1]][list(QUERY_COLUMNS)].astype(str)
    memo: dict = {}
    got = build_features(
        short,
        fit_mask=fit_all,
        groups=groups,
        song_vectors=vectors,
        query=query,
        memo=memo,
    ).X
    assert list(got.columns) == list(full.columns)
    for column in full.columns:
        a, b = full[column].iloc[0], got[column].iloc[0]
        assert (pd.isna(a) and pd.isna(b)) or a == pytest.approx(b, abs=1e-5), column

    # the memo answers the next call, and refuses other fitting rows
    assert "signature" in memo and len(memo) > 5
    with pytest.raises(InputError, match="memo"):
        build_features(short, fit_mask=~fit_all, groups=["counts"], query=query, memo=memo)


def test_seed_songs_replace_the_profile(data: KKBoxData, audio: AudioIndex) -> None:
    vectors = audio.song_vectors(data)
    fit_all = np.ones(len(data.train), dtype=bool)
    songs = np.flatnonzero(vectors.rows >= 0)[:20]
    query = pd.DataFrame(
        {
            "msno": ["nobody"] * songs.size,
            "song_id": [str(data.song_ids[c]) for c in songs],
            "source_system_tab": "my library",
            "source_screen_name": "Local playlist more",
            "source_type": "local-library",
        }
    )
    memo: dict = {}
    plain = build_features(
        data, fit_mask=fit_all, groups=[AUDIO_GROUP], song_vectors=vectors, query=query, memo=memo
    ).X
    assert plain.isna().all().all()  # an unknown user has no profile
    seeded = build_features(
        data,
        fit_mask=fit_all,
        groups=[AUDIO_GROUP],
        song_vectors=vectors,
        query=query,
        query_seeds={"nobody": songs[:1]},
        memo=memo,
    ).X
    assert seeded["audio_dot"].iloc[0] == pytest.approx(1.0, abs=1e-5)  # the seed itself
    assert seeded["audio_dot"].notna().all()
    assert seeded["audio_contrast"].isna().all()  # seeds say nothing of what was played once


def test_index_of_another_store_is_refused(world: Path, audio: AudioIndex, tmp_path: Path) -> None:
    with pytest.raises(MismatchError, match="fingerprint"):
        AudioIndex.load(audio.folder, expect_fingerprint="0" * 16)
    with pytest.raises(InputError, match="build-index"):
        AudioIndex.load(tmp_path / "nowhere")
