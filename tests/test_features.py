"""Tests of the feature groups (ranking.features) on a tiny synthetic KKBox world."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedding.errors import InputError
from ranking.data import KKBoxData, load_kkbox
from ranking.features import (
    DEFAULT_GROUPS,
    FEATURE_GROUPS,
    _history_cosine,
    build_features,
    build_starter_features,
    pair_key,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data folder of the tiny demo world, generated once per session.

    ``ENCORE_TINY_WORLD`` may name an existing data folder to use instead.
    """
    if os.environ.get("ENCORE_TINY_WORLD"):
        return Path(os.environ["ENCORE_TINY_WORLD"])
    script = REPO / "scripts" / "make_demo_world.py"
    if not script.is_file():
        pytest.skip("scripts/make_demo_world.py is absent: no synthetic world to test on")
    out = tmp_path_factory.getbasetemp() / "tiny_world"
    if not (out / "data" / "train.csv").is_file():
        command = [sys.executable, str(script), "--out", str(out), "--scale", "tiny", "--seed", "0"]
        subprocess.run(command, check=True, capture_output=True)
    return out / "data"


def _n_test(data: KKBoxData) -> int:
    return 0 if data.test is None else len(data.test)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> KKBoxData:
    return load_kkbox(tiny_world(tmp_path_factory), show_progress=False)


@pytest.fixture(scope="module")
def fit_mask(data: KKBoxData) -> np.ndarray:
    n = len(data.train)
    return np.arange(n) < int(0.8 * n)


@pytest.fixture(scope="module")
def features(data: KKBoxData, fit_mask: np.ndarray) -> pd.DataFrame:
    return build_features(data, fit_mask=fit_mask).X


def test_registry_flags_label_groups() -> None:
    assert set(DEFAULT_GROUPS) <= set(FEATURE_GROUPS)
    derived = {name for name, group in FEATURE_GROUPS.items() if group.label_derived}
    assert "target_stats" in derived
    assert not derived & {"counts", "member", "song", "isrc", "context", "cf"}


def test_every_group_gives_one_value_per_row(data: KKBoxData, features: pd.DataFrame) -> None:
    n_rows = len(data.train) + _n_test(data)
    assert len(features) == n_rows
    for column in features.columns:
        dtype = features[column].dtype
        assert isinstance(dtype, pd.CategoricalDtype) or dtype == np.float32, column
        if dtype == np.float32:
            assert not np.isinf(features[column].to_numpy()).any(), column
    # every group contributes, and no column is all missing
    assert features.notna().any().all()
    assert {"cnt_user", "age", "song_length", "isrc_year", "source_type", "rate_user_type"} <= set(
        features.columns
    )
    assert {"svd_user_song_dot", "svd_history_song_cos"} <= set(features.columns)


def test_counts_match_pandas(data: KKBoxData, features: pd.DataFrame) -> None:
    rows = pd.concat([data.train[["msno", "song_id"]], data.test[["msno", "song_id"]]])
    users = rows["msno"].astype(str).to_numpy()
    expect = pd.Series(users).map(pd.Series(users).value_counts()).to_numpy()
    assert np.array_equal(features["cnt_user"].to_numpy(), expect.astype(np.float32))
    so_far = pd.Series(users).groupby(users).cumcount().to_numpy()
    assert np.array_equal(features["user_so_far"].to_numpy(), so_far.astype(np.float32))


def test_labels_do_not_reach_unlabelled_groups(data: KKBoxData, fit_mask: np.ndarray) -> None:
    groups = [n for n, g in FEATURE_GROUPS.items() if not g.label_derived and n in DEFAULT_GROUPS]
    base = build_features(data, fit_mask=fit_mask, groups=groups).X
    flipped = KKBoxData(**{**data.__dict__, "train": data.train.copy()})
    flipped.train["target"] = (1 - flipped.train["target"]).astype(np.int8)
    other = build_features(flipped, fit_mask=~fit_mask, groups=groups).X
    pd.testing.assert_frame_equal(base, other)


def test_cache_rebuilds_only_label_groups(data: KKBoxData, fit_mask: np.ndarray) -> None:
    cache: dict[str, pd.DataFrame] = {}
    first = build_features(data, fit_mask=fit_mask, groups=["counts", "target_stats"], cache=cache)
    assert set(cache) == {"counts"}
    second = build_features(
        data,
        fit_mask=np.ones(len(data.train), dtype=bool),
        groups=["counts", "target_stats"],
        cache=cache,
    )
    pd.testing.assert_frame_equal(first.X[["cnt_user"]], second.X[["cnt_user"]])
    # more fitting rows move the validation rows' rates
    tail = ~np.r_[fit_mask, np.ones(_n_test(data), dtype=bool)]
    assert not np.allclose(first.X["rate_user"][tail], second.X["rate_user"][tail])


def test_bad_requests_raise(data: KKBoxData, fit_mask: np.ndarray) -> None:
    with pytest.raises(InputError, match="unknown feature group"):
        build_features(data, fit_mask=fit_mask, groups=["counts", "nope"])
    with pytest.raises(InputError, match="fit_mask.shape"):
        build_features(data, fit_mask=fit_mask[:-1], groups=["counts"])
    n_all = len(data.train) + _n_test(data)
    with pytest.raises(InputError, match="test rows"):
        build_features(data, fit_mask=np.ones(n_all, dtype=bool), groups=["counts"])


def test_pair_key_is_compact_and_marks_missing() -> None:
    a = np.array([0, 0, 5, 5, -1, 0])
    b = np.array([1, 2, 1, 1, 3, 1])
    key = pair_key(a, b)
    assert key[4] == -1
    assert key[0] == key[5] and key[2] == key[3]
    assert len({key[0], key[1], key[2]}) == 3
    assert key.max() == 2


def test_history_cosine_matches_brute_force(rng: np.random.Generator) -> None:
    user = rng.integers(0, 6, size=120)
    factors = rng.normal(size=(120, 7)).astype(np.float32)
    fast = _history_cosine(user, factors, block=3)
    for i in range(120):
        earlier = np.flatnonzero(user[:i] == user[i])
        if earlier.size == 0:
            assert np.isnan(fast[i])
            continue
        history = factors[earlier].sum(axis=0)
        cos = history @ factors[i] / np.linalg.norm(history) / np.linalg.norm(factors[i])
        assert fast[i] == pytest.approx(cos, abs=1e-5)


def test_starter_features_are_raw_columns(data: KKBoxData) -> None:
    starter = build_starter_features(data)
    assert {"msno", "song_id", "source_type", "artist_name", "bd"} <= set(starter.feature_names)
    assert {"msno", "song_id", "source_type"} <= set(starter.categorical_names)
    assert len(starter.X) == len(data.train) + _n_test(data)
