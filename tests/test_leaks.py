"""Leak tests: no feature may carry the label of the row it describes.

(a) With the validation rows' labels shuffled, the validation AUC must be chance; with them
intact, far above it. (b) For every label-derived group, flipping one fitting row's label leaves
that row's features unchanged, while it does move some other row's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_features import tiny_world

from ranking.data import KKBoxData, load_kkbox
from ranking.features import AUDIO_GROUP, FEATURE_GROUPS, SongVectors, build_features
from ranking.train import TrainConfig, train_ranker

VALID_FRAC = 0.2
LABEL_GROUPS = sorted(name for name, group in FEATURE_GROUPS.items() if group.label_derived)


def auc_se(y: np.ndarray) -> float:
    """Standard error of the AUC of a random score: sqrt((n1 + n0 + 1) / (12 n1 n0))."""
    n1 = float((y == 1).sum())
    n0 = float((y == 0).sum())
    return float(np.sqrt((n1 + n0 + 1) / (12 * n1 * n0)))


def _config() -> TrainConfig:
    return TrainConfig(valid_frac=VALID_FRAC, refit=False, starter=False, threads=2, log_every=0)


@pytest.mark.slow
def test_shuffled_validation_labels_give_chance_auc(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # a copy of the world whose validation labels are shuffled
    source = tiny_world(tmp_path_factory)
    folder = tmp_path / "data"
    shutil.copytree(source, folder)
    train = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False)
    n_fit = int(round(len(train) * (1 - VALID_FRAC)))
    rng = np.random.default_rng(0)
    train.loc[n_fit:, "target"] = rng.permutation(train["target"].to_numpy()[n_fit:])
    train.to_csv(folder / "train.csv", index=False)
    y_valid = train["target"].to_numpy(dtype=int)[n_fit:]
    se = auc_se(y_valid)

    # shuffled: chance; intact: far above chance on the same rows
    shuffled = train_ranker(folder, tmp_path / "shuffled", config=_config(), show_progress=False)
    intact = train_ranker(source, tmp_path / "intact", config=_config(), show_progress=False)
    assert shuffled["n_valid_rows"] == y_valid.size
    assert abs(shuffled["valid_auc"] - 0.5) < 3 * se, (shuffled["valid_auc"], se)
    assert intact["valid_auc"] > 0.5 + 10 * se, (intact["valid_auc"], se)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> KKBoxData:
    return load_kkbox(tiny_world(tmp_path_factory), show_progress=False)


@pytest.fixture(scope="module")
def vectors(data: KKBoxData) -> SongVectors:
    """Random song vectors for the groups that read audio; a few songs have none."""
    rng = np.random.default_rng(0)
    n_songs = len(data.song_ids)
    rows = np.where(rng.random(n_songs) < 0.05, -1, np.arange(n_songs))
    return SongVectors(rng.normal(size=(n_songs, 8)).astype(np.float32), rows)


def test_there_is_a_label_derived_group() -> None:
    assert "target_stats" in LABEL_GROUPS
    assert AUDIO_GROUP in LABEL_GROUPS


@pytest.mark.parametrize("group", LABEL_GROUPS)
def test_own_label_never_reaches_own_features(
    data: KKBoxData, vectors: SongVectors, group: str
) -> None:
    n_train = len(data.train)
    fit_mask = np.arange(n_train) < int(0.8 * n_train)
    base = build_features(data, fit_mask=fit_mask, groups=[group], song_vectors=vectors).X
    columns = [c for c in base.columns if not isinstance(base[c].dtype, pd.CategoricalDtype)]

    # flip a few fitting rows, one at a time: early, middle and late in the fitting range
    for row in (3, n_train // 3, int(0.8 * n_train) - 2):
        train = data.train.copy()
        train.loc[row, "target"] = np.int8(1 - int(train.loc[row, "target"]))
        flipped = KKBoxData(**{**data.__dict__, "train": train})
        again = build_features(flipped, fit_mask=fit_mask, groups=[group], song_vectors=vectors).X

        # the row itself: unchanged in every column
        mine = base.loc[row, columns].to_numpy(dtype=np.float64)
        assert np.array_equal(mine, again.loc[row, columns].to_numpy(dtype=np.float64), True), row

        # the check could fail: other rows do move
        moved = ~np.isclose(
            base[columns].to_numpy(dtype=np.float64),
            again[columns].to_numpy(dtype=np.float64),
            equal_nan=True,
        )
        assert moved.any(), f"flipping row {row} changed no feature of group {group}"


def test_audio_feature_ignores_own_label(data: KKBoxData, vectors: SongVectors) -> None:
    """Flipping a fitting row's label leaves its audio cosines alone and moves its user's others."""
    n_train = len(data.train)
    fit_mask = np.arange(n_train) < int(0.8 * n_train)
    base = build_features(data, fit_mask=fit_mask, groups=[AUDIO_GROUP], song_vectors=vectors).X

    # a fitting row whose song has a vector, its label flipped
    song = data.train["song_id"].cat.codes.to_numpy()
    row = int(np.flatnonzero(fit_mask & (vectors.rows[song] >= 0))[10])
    train = data.train.copy()
    train.loc[row, "target"] = np.int8(1 - int(train.loc[row, "target"]))
    flipped = KKBoxData(**{**data.__dict__, "train": train})
    again = build_features(flipped, fit_mask=fit_mask, groups=[AUDIO_GROUP], song_vectors=vectors).X

    # unchanged for the row itself, changed for some other row of the same user
    assert np.isfinite(base.loc[row].to_numpy(dtype=np.float64)).all()
    pd.testing.assert_series_equal(base.loc[row], again.loc[row])
    user = data.train["msno"].cat.codes.to_numpy()
    same_user = np.flatnonzero(user == user[row])
    moved = ~np.isclose(base.loc[same_user], again.loc[same_user], equal_nan=True)
    assert moved.any(), "flipping the label moved no other row of the user: the test is blind"
