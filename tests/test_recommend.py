"""Tests of serving recommendations (ranking.recommend and ``rank --user``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audio_feature import TAG_NAMES, synthetic_index
from test_features import tiny_world

from embedding.errors import InputError
from ranking.cli import rank_main, train_main
from ranking.recommend import Item, Recommender

ITEM_KEYS = {"song_id", "score", "cosine", "name", "artist", "tags"}


def model_with_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny world trained once with a synthetic audio index: (data folder, model folder)."""
    world = tiny_world(tmp_path_factory)
    base = tmp_path_factory.getbasetemp()
    model = base / "model_with_index"
    if not (model / "meta.json").is_file():
        index = synthetic_index(world, base / "synthetic_audio")
        argv = [str(world), "--index", str(index), "--out", str(model), "--threads", "2"]
        assert train_main([*argv, "--log-every", "0", "--no-starter"]) == 0
    return world, model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return model_with_index(tmp_path_factory)


@pytest.fixture(scope="module")
def recommender(trained: tuple[Path, Path]) -> Recommender:
    return Recommender.load(trained[1])


@pytest.fixture(scope="module")
def plays(trained: tuple[Path, Path]) -> pd.DataFrame:
    """Every (msno, song_id) of train and test, and which split it came from."""
    world = trained[0]
    train = pd.read_csv(world / "train.csv", usecols=["msno", "song_id"]).assign(split="train")
    test = pd.read_csv(world / "test.csv", usecols=["msno", "song_id"]).assign(split="test")
    return pd.concat([train, test], ignore_index=True)


def _heavy_user(plays: pd.DataFrame) -> str:
    return str(plays.loc[plays["split"] == "train", "msno"].value_counts().index[0])


def _rank_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert rank_main([*argv, "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1, "--format json prints exactly one JSON object"
    return json.loads(out)


def test_recommend_returns_ranked_items(recommender: Recommender, plays: pd.DataFrame) -> None:
    items = recommender.recommend(_heavy_user(plays), k=10)
    assert len(items) == 10 and all(isinstance(item, Item) for item in items)
    scores = [item.score for item in items]
    assert scores == sorted(scores, reverse=True)
    assert len({item.song_id for item in items}) == 10
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(item.cosine is not None and -1 <= item.cosine <= 1 for item in items)
    assert all(len(item.tags) == 3 and item.tags[0][0] in TAG_NAMES for item in items)
    assert any(item.name for item in items) and any(item.artist for item in items)
    with pytest.raises(InputError, match="k=0"):
        recommender.recommend(_heavy_user(plays), k=0)


def test_rank_user_never_lists_a_played_song(
    trained: tuple[Path, Path], plays: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    user = _heavy_user(plays)
    result = _rank_json(["--model", str(trained[1]), "--user", user, "-k", "300"], capsys)
    listed = {item["song_id"] for item in result["items"]}
    played = set(plays.loc[plays["msno"] == user, "song_id"])
    assert len(listed) > 100  # enough candidates that a played one would show up
    assert not listed & played


def test_json_output_shape(
    trained: tuple[Path, Path], plays: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    user = _heavy_user(plays)
    result = _rank_json(["--model", str(trained[1]), "--user", user, "-k", "5"], capsys)
    assert set(result) == {"user", "items"} and result["user"] == user
    assert len(result["items"]) == 5
    for item in result["items"]:
        assert set(item) == ITEM_KEYS
        assert isinstance(item["score"], float) and isinstance(item["cosine"], float)
        assert [set(tag) for tag in item["tags"]] == [{"tag", "score"}] * 3


def test_table_output(
    trained: tuple[Path, Path], plays: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rank_main(["--model", str(trained[1]), "--user", _heavy_user(plays), "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "song_id", "name"] and "tags" in lines[0]
    assert len(lines) == 2 + 4
    assert lines[2].split()[0] == "1" and any(tag in lines[2] for tag in TAG_NAMES)


def test_unknown_user_is_a_clear_error(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status = rank_main(["--model", str(trained[1]), "--user", "not-a-member"])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""
    assert "user='not-a-member' is unknown" in captured.err and "--seed-songs" in captured.err


def test_seed_songs_start_a_cold_user(
    trained: tuple[Path, Path], plays: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    # seeds: songs nobody played in train (the fitting rows of the served model)
    world, model = trained
    songs = pd.read_csv(world / "songs.csv", usecols=["song_id"])["song_id"]
    trained_songs = set(plays.loc[plays["split"] == "train", "song_id"])
    unplayed = [s for s in songs if s not in trained_songs]
    seeds = unplayed[:3]
    argv = ["--model", str(model), "--user", "new-listener", "--seed-songs", ",".join(seeds)]
    result = _rank_json([*argv, "-k", "1000"], capsys)

    # songs come back, never the seeds, and some were never played in train
    listed = [item["song_id"] for item in result["items"]]
    assert len(listed) > 50 and not set(listed) & set(seeds)
    assert set(listed) - trained_songs, "audio retrieval should reach songs without train plays"
    assert all(item["cosine"] is not None for item in result["items"][:10])

    # an unknown seed is refused
    status = rank_main([*argv[:4], "--seed-songs", "no-such-song"])
    assert status == 1 and "no-such-song" in capsys.readouterr().err


def test_warm_requests_are_fast(recommender: Recommender, plays: pd.DataFrame) -> None:
    import time

    users = plays.loc[plays["split"] == "train", "msno"].drop_duplicates().head(10).tolist()
    seconds = []
    for user in users:
        started = time.perf_counter()
        recommender.recommend(user, k=10)
        seconds.append(time.perf_counter() - started)
    assert float(np.median(seconds)) < 0.5  # generous: the tiny world on a shared CI machine


def test_fast_prediction_matches_lightgbm_on_the_frame(recommender: Recommender) -> None:
    test = pd.read_csv(recommender.data.folder / "test.csv").head(300)
    feats = recommender._features(test, None)
    fast = recommender._predict(feats)
    slow = recommender.booster.predict(feats.X)
    assert fast.shape == (300,) and np.allclose(fast, slow, atol=1e-9)
    assert fast.std() > 0
