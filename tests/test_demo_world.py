"""Tests of ``scripts/make_demo_world.py`` on the tiny world (one generation per module)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_world.py"
HEADERS = {
    "train.csv": "msno,song_id,source_system_tab,source_screen_name,source_type,target",
    "test.csv": "id,msno,song_id,source_system_tab,source_screen_name,source_type",
    "songs.csv": "song_id,song_length,genre_ids,artist_name,composer,lyricist,language",
    "members.csv": ("msno,city,bd,gender,registered_via,registration_init_time,expiration_date"),
    "song_extra_info.csv": "song_id,name,isrc",
    "truth_train.csv": "p_true",
    "truth_test.csv": "p_true",
}
ID = re.compile(r"^[A-Za-z0-9+/]{43}=$")


def _generate(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--scale", "tiny", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"gender": str})


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.csv")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    result = _generate(out, "--seed", "0", "--audio")
    assert "oracle AUC" in result.stdout
    return out


@pytest.fixture(scope="module")
def tables(world: Path) -> dict[str, pd.DataFrame]:
    return {name: _read(world / "data" / name) for name in HEADERS}


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("make_demo_world", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while loading
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_headers_and_id_format(world: Path, tables: dict[str, pd.DataFrame]) -> None:
    for name, header in HEADERS.items():
        with open(world / "data" / name, encoding="utf-8") as f:
            assert f.readline().rstrip("\n") == header, name
    ids = pd.concat([tables["members.csv"].msno, tables["songs.csv"].song_id])
    assert ids.str.match(ID).all()
    assert ids.str.contains("/", regex=False).any() and ids.str.contains("+", regex=False).any()
    assert tables["test.csv"].id.tolist() == list(range(len(tables["test.csv"])))
    style = _read(world / "data" / "song_style.csv")
    assert list(style.columns[:5]) == [
        "song_id",
        "brightness",
        "tempo",
        "rhythm_density",
        "pitch_height",
    ]


def test_kkbox_quirks(world: Path, tables: dict[str, pd.DataFrame]) -> None:
    train, songs, members = tables["train.csv"], tables["songs.csv"], tables["members.csv"]
    tab = train.source_system_tab
    assert (tab == "null").any() and tab.isna().any()
    assert train.source_screen_name.isna().mean() > 0.02
    assert songs.genre_ids.str.contains("|", regex=False).any() and songs.genre_ids.isna().any()
    assert "\u00a0" in (world / "data" / "songs.csv").read_text(encoding="utf-8")
    assert (members.bd == 0).mean() > 0.4 and (members.bd > 100).any() and (members.bd < 0).any()
    assert members.gender.isna().mean() > 0.4
    assert (members.expiration_date == 19700101).sum() == 1
    dates = pd.to_datetime(members.registration_init_time.astype(str), format="%Y%m%d")
    assert dates.max() <= pd.Timestamp("2017-02-28")
    assert set(train.target.unique()) == {0, 1}


def test_truth_row_aligned(tables: dict[str, pd.DataFrame]) -> None:
    train, test = tables["train.csv"], tables["test.csv"]
    p_train, p_test = tables["truth_train.csv"].p_true, tables["truth_test.csv"].p_true
    assert len(p_train) == len(train) and len(p_test) == len(test)
    assert p_train.between(0, 1, inclusive="neither").all()
    # the targets are draws from p_true, so the means agree and p_true ranks the targets
    assert abs(train.target.mean() - p_train.mean()) < 0.02
    assert abs(train.target.mean() - 0.5035) < 0.03


def test_oracle_auc_on_validation_tail(tables: dict[str, pd.DataFrame]) -> None:
    train, p = tables["train.csv"], tables["truth_train.csv"].p_true
    tail = slice(int(0.8 * len(train)), None)
    auc = roc_auc_score(train.target[tail], p[tail])
    assert 0.70 <= auc <= 0.90


def test_context_replay_rates_follow_kkbox(tables: dict[str, pd.DataFrame]) -> None:
    rate = tables["train.csv"].groupby("source_system_tab").target.mean()
    assert rate["my library"] > rate["discover"] > rate["radio"]
    share = tables["train.csv"].source_system_tab.value_counts(normalize=True)
    assert 0.35 < share["my library"] < 0.65


def test_cold_start_and_missing_songs(tables: dict[str, pd.DataFrame]) -> None:
    train, test = tables["train.csv"], tables["test.csv"]
    songs, members = tables["songs.csv"], tables["members.csv"]
    test_users = pd.Series(test.msno.unique())
    cold_users = ~test_users.isin(train.msno)
    assert 0.05 < cold_users.mean() < 0.30
    cold_songs = ~test.song_id.isin(train.song_id)
    assert 0.03 < cold_songs.mean() < 0.30
    assert (~train.song_id.isin(songs.song_id)).any()
    assert (~test.song_id.isin(songs.song_id)).any()
    assert train.msno.isin(members.msno).all() and test.msno.isin(members.msno).all()
    pairs = pd.concat([train[["msno", "song_id"]], test[["msno", "song_id"]]])
    assert not pairs.duplicated().any()


def test_same_seed_same_bytes_other_seed_differs(world: Path, tmp_path: Path) -> None:
    _generate(tmp_path / "again", "--seed", "0")
    _generate(tmp_path / "other", "--seed", "1")
    first = _digests(world / "data")
    assert _digests(tmp_path / "again" / "data") == first
    other = _digests(tmp_path / "other" / "data")
    assert all(other[name] != digest for name, digest in first.items())


def test_audio_manifest_decodes_to_three_seconds(
    world: Path, tables: dict[str, pd.DataFrame]
) -> None:
    manifest = _read(world / "audio" / "manifest.csv")
    assert list(manifest.columns) == ["song_id", "path"]
    assert sorted(manifest.song_id) == sorted(tables["songs.csv"].song_id)
    assert manifest.path.str.match(r"^\d{7}\.flac$").all()
    for path in manifest.path.iloc[::97]:
        y, sr = sf.read(world / "audio" / path, dtype="float32")
        assert sr == 16000 and y.ndim == 1 and len(y) == 48000
        assert 0.05 < np.abs(y).max() <= 1.0


def test_render_clip_follows_audible_style(script: ModuleType) -> None:
    # brightness raises the spectral centroid, pitch height the dominant frequency
    def centroid_and_peak(style: list[float]) -> tuple[float, float]:
        values = []
        for seed in range(3):
            y = script.render_clip(np.array(style), np.random.default_rng(seed))
            spec = np.abs(np.fft.rfft(y))
            freqs = np.fft.rfftfreq(len(y), 1 / 16000)
            values.append(((spec * freqs).sum() / spec.sum(), freqs[spec.argmax()]))
        return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))

    dark, low = centroid_and_peak([-1.5, 0, 0, -1.5, 0, 0])
    bright, _ = centroid_and_peak([1.5, 0, 0, -1.5, 0, 0])
    _, high = centroid_and_peak([-1.5, 0, 0, 1.5, 0, 0])
    assert bright > 1.3 * dark
    assert high > 2.0 * low
    y = script.render_clip(np.zeros(6), np.random.default_rng(0))
    np.testing.assert_array_equal(y, script.render_clip(np.zeros(6), np.random.default_rng(0)))
