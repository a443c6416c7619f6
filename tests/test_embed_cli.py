"""Tests of the ``embed-audio`` command: folders, manifests, failures, resume, exit codes, kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from embedding.audio import load_audio
from embedding.cli import PART_MIN_SONGS, main
from embedding.encoders import (
    Encoder,
    EncoderOutput,
    WindowRule,
    embed_song,
    get_encoder,
    register_encoder,
)
from embedding.errors import WeightsError
from embedding.store import load_store, read_failures

REPO = Path(__file__).resolve().parents[1]
TEST_SR = 8000


class MeanEncoder(Encoder):
    """A tiny deterministic encoder for tests: per-window statistics scaled by ``layer``."""

    name = "test-mean"
    sample_rate = TEST_SR
    dim = 4
    window = WindowRule(window_seconds=1.0, min_seconds=0.5)
    tag_names = ["loud", "bright"]

    def __init__(self, layer: int = 1, device: str = "auto", dtype: str = "float32") -> None:
        self.layer = layer
        self.dtype = dtype

    def forward(self, windows: torch.Tensor) -> EncoderOutput:
        diff = windows[:, 1:] - windows[:, :-1]
        vectors = torch.stack(
            [
                windows.mean(dim=1),
                windows.std(dim=1),
                windows.abs().mean(dim=1),
                diff.abs().mean(dim=1),
            ],
            dim=1,
        )
        tags = torch.sigmoid(vectors[:, 2:4] * 10)
        return EncoderOutput(vectors=(vectors * self.layer).numpy(), tags=tags.numpy())

    def config(self) -> dict[str, Any]:
        return {"layer": self.layer, "dtype": self.dtype, "weights": None}


register_encoder("test-mean")(MeanEncoder)


@register_encoder("test-noweights")
def _no_weights(**options: Any) -> Encoder:
    raise WeightsError("weights for test-noweights are missing; try --encoder musicnn")


def write_clip(path: Path, seconds: float, *, sr: int = 22050, freq: float = 440.0) -> Path:
    """A sine clip with a little noise, seeded by its frequency."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(int(freq)).standard_normal(len(t))
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise
    sf.write(path, y.astype(np.float32), sr)
    return path


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


def failures_by_id(store: Path) -> dict[str, str]:
    return {f.song_id: f.reason for f in read_failures(store)}


def test_folder_embeds_like_embed_song_and_resume_skips(tmp_path, capsys):
    # five clips in nested folders, of lengths giving 1 to 3 windows
    songs = tmp_path / "songs"
    paths = [
        write_clip(songs / f"d{i % 2}" / f"s{i}.wav", 1.0 + 0.6 * i, freq=200 + 50 * i)
        for i in range(5)
    ]
    out = tmp_path / "store"

    assert (
        run_cli(
            songs, "--out", out, "--encoder", "test-mean", "--num-workers", "0", "--batch-size", "2"
        )
        == 0
    )
    store = load_store(out)
    assert sorted(store.ids) == [f"s{i}" for i in range(5)]
    assert store.meta["encoder"] == "test-mean" and store.meta["count"] == 5
    assert store.tag_names == ["loud", "bright"]

    # batching across songs gives what one song at a time gives
    encoder = get_encoder("test-mean")
    for path in paths:
        vector, tags = embed_song(encoder, load_audio(path, sr=TEST_SR))
        np.testing.assert_allclose(
            store.vectors[store.row_of(path.stem)], vector, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(store.tags[store.row_of(path.stem)], tags, rtol=1e-5, atol=1e-6)

    # a rerun skips everything and leaves the store as it was
    fingerprint = store.fingerprint
    capsys.readouterr()
    assert run_cli(songs, "--out", out, "--encoder", "test-mean", "--num-workers", "0") == 0
    assert "embedded 0, skipped 5 already in the store" in capsys.readouterr().out
    assert load_store(out).fingerprint == fingerprint

    # a new song is added to the same store
    write_clip(songs / "s9.wav", 2.0, freq=900)
    assert run_cli(songs, "--out", out, "--encoder", "test-mean", "--num-workers", "0") == 0
    assert "embedded 1, skipped 5" in capsys.readouterr().out
    assert len(load_store(out)) == 6


def test_worker_processes_give_the_same_vectors(tmp_path):
    songs = tmp_path / "songs"
    for i in range(6):
        write_clip(songs / f"s{i}.flac", 1.5 + 0.4 * i, freq=300 + 70 * i)
    for workers in ("0", "2"):
        assert (
            run_cli(
                songs,
                "--out",
                tmp_path / workers,
                "--encoder",
                "test-mean",
                "--num-workers",
                workers,
            )
            == 0
        )
    a, b = load_store(tmp_path / "0"), load_store(tmp_path / "2")
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.vectors, b.vectors)


def make_bad_files(songs: Path) -> dict[str, str]:
    """Every kind of unusable file, with a pattern its failure reason must match."""
    songs.mkdir(parents=True, exist_ok=True)
    (songs / "empty.mp3").write_bytes(b"")
    (songs / "text.wav").write_text("this is not audio\n" * 20)
    (songs / "folder.flac").mkdir()
    sf.write(songs / "nosamples.wav", np.zeros(0, np.float32), 22050)
    sf.write(songs / "nan.wav", np.full(8000, np.nan, np.float32), 8000, subtype="FLOAT")
    write_clip(songs / "short.wav", 0.2)
    whole = write_clip(songs.parent / "whole.flac", 2.0).read_bytes()
    (songs / "corrupt.flac").write_bytes(whole[: len(whole) // 3])
    return {
        "empty": "empty file",
        "text": "cannot decode",
        "folder": "is a directory",
        "nosamples": "zero-length",
        "nan": "NaN or infinite",
        "short": "too short",
        "corrupt": "cannot decode",
    }


def test_bad_audio_goes_to_failures_and_run_carries_on(tmp_path, capsys, caplog):
    # good clips, one silent clip and every kind of bad file
    songs = tmp_path / "songs"
    write_clip(songs / "good.flac", 2.0)
    write_clip(songs / "good2.ogg", 1.5, freq=300)
    sf.write(songs / "silent.wav", np.zeros(16000, np.float32), 16000)
    expected = make_bad_files(songs)
    out = tmp_path / "store"

    # exit 1, the store written with the good and silent songs
    assert run_cli(songs, "--out", out, "--encoder", "test-mean", "--num-workers", "0") == 1
    store = load_store(out)
    assert sorted(store.ids) == ["good", "good2", "silent"]
    assert "silent" in caplog.text
    failed = failures_by_id(out)
    assert set(failed) == set(expected)
    for song_id, pattern in expected.items():
        assert pattern in failed[song_id], (song_id, failed[song_id])
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "song_id", "reason"] and len(rows) == 1 + len(expected)
    assert "failed 7" in capsys.readouterr().out

    # a rerun skips recorded failures and succeeds
    assert run_cli(songs, "--out", out, "--encoder", "test-mean", "--num-workers", "0") == 0
    assert "skipped 7 recorded failures" in capsys.readouterr().out

    # --retry-failed retries them; a repaired file leaves failures.csv
    write_clip(songs / "short.wav", 1.0)
    assert (
        run_cli(
            songs, "--out", out, "--encoder", "test-mean", "--num-workers", "0", "--retry-failed"
        )
        == 1
    )
    assert "short" in load_store(out)
    assert set(failures_by_id(out)) == set(expected) - {"short"}


def test_manifest_ids_with_slashes_and_relative_paths(tmp_path):
    clips = tmp_path / "data" / "clips"
    a = write_clip(clips / "a.wav", 1.2)
    b = write_clip(clips / "b.wav", 2.5, freq=660)
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text(
        f'song_id,path\nBQ/7bN+6Q0=,clips/a.wav\n"x,y+/=",{b}\nz==,clips/missing.wav\n'
    )
    out = tmp_path / "store"

    assert (
        run_cli(
            "--manifest", manifest, "--out", out, "--encoder", "test-mean", "--num-workers", "0"
        )
        == 1
    )
    store = load_store(out)
    assert store.ids == ["BQ/7bN+6Q0=", "x,y+/="]
    assert "file not found" in failures_by_id(out)["z=="]
    vector, _ = embed_song(get_encoder("test-mean"), load_audio(a, sr=TEST_SR))
    np.testing.assert_allclose(store.vectors[store.row_of("BQ/7bN+6Q0=")], vector, rtol=1e-5)
    assert not any("/" in p.name or "=" in p.name for p in out.iterdir())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("id,file\na,b.wav\n", "needs the columns song_id,path"),
        ("song_id,path\na,x.wav\na,y.wav\n", "repeats song ids"),
        ("song_id,path\n,x.wav\n", "line 2: empty song_id"),
    ],
)
def test_bad_manifest_is_a_usage_error(tmp_path, capsys, content, message):
    manifest = tmp_path / "m.csv"
    if content is not None:
        manifest.write_text(content)
    assert run_cli("--manifest", manifest, "--out", tmp_path / "s", "--encoder", "test-mean") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_mismatched_store_is_refused(tmp_path, capsys):
    songs = tmp_path / "songs"
    write_clip(songs / "a.wav", 1.0)
    out = tmp_path / "store"
    assert (
        run_cli(songs, "--out", out, "--encoder", "test-mean", "--layer", "1", "--num-workers", "0")
        == 0
    )
    capsys.readouterr()
    assert (
        run_cli(songs, "--out", out, "--encoder", "test-mean", "--layer", "2", "--num-workers", "0")
        == 2
    )
    err = capsys.readouterr().err
    assert "differing keys: layer" in err and "another --out" in err
    assert run_cli(songs, "--out", out, "--encoder", "test-mean", "--max-seconds", "5") == 2
    assert "max_seconds" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    # encoder factory errors reach the user as their message
    write_clip(tmp_path / "songs" / "a.wav", 1.0)
    assert run_cli(tmp_path / "songs", "--out", tmp_path / "s", "--encoder", "test-noweights") == 2
    assert "try --encoder musicnn" in capsys.readouterr().err

    # an empty folder, a missing folder, a folder that is not a store
    (tmp_path / "empty").mkdir()
    assert run_cli(tmp_path / "empty", "--out", tmp_path / "s", "--encoder", "test-mean") == 2
    assert "no audio files found" in capsys.readouterr().err
    assert run_cli(tmp_path / "nowhere", "--out", tmp_path / "s", "--encoder", "test-mean") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert run_cli(tmp_path / "songs", "--out", tmp_path / "songs", "--encoder", "test-mean") == 2
    assert "neither empty nor an embedding store" in capsys.readouterr().err

    # argparse errors
    for argv in (
        ["--out", "x"],
        [str(tmp_path), "--out", "x", "--batch-size", "0"],
        [str(tmp_path)],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


# --- end to end with musicnn, the encoder users run offline -------------------------------------


def musicnn_available() -> bool:
    try:
        get_encoder("musicnn", device="cpu")
    except Exception:
        return False
    return True


needs_musicnn = pytest.mark.skipif(
    not musicnn_available(), reason="the musicnn encoder is not available"
)


@needs_musicnn
@pytest.mark.shared
@pytest.mark.slow
def test_shared_clips_all_embed_with_musicnn(tmp_path, shared_dir, capsys):
    out = tmp_path / "store"
    code = run_cli(
        shared_dir / "audio",
        "--out",
        out,
        "--encoder",
        "musicnn",
        "--max-seconds",
        "10",
        "--device",
        "cpu",
    )
    assert code == 0, capsys.readouterr()
    store = load_store(out)
    assert len(store) == 14 and store.dim == 200 and store.tags.shape == (14, 50)
    assert np.isfinite(store.vectors).all() and np.linalg.norm(store.vectors, axis=1).min() > 0
    assert store.meta["max_seconds"] == 10 and store.meta["sample_rate"] == 16000


@needs_musicnn
def test_musicnn_layer_by_name(tmp_path, capsys):
    songs = tmp_path / "songs"
    for i in range(2):
        write_clip(songs / f"song{i}.wav", 3.0, sr=16000, freq=220 + 110 * i)
    out = tmp_path / "store"
    args = ("--encoder", "musicnn", "--device", "cpu", "--num-workers", "0")
    code = run_cli(songs, "--out", out, *args, "--layer", "mean_pool")
    assert code == 0, capsys.readouterr()
    store = load_store(out)
    assert store.dim == 753 and store.meta["layer"] == "mean_pool" and store.tags.shape == (2, 50)

    # a block number is for musicfm; musicnn names the layers it has
    assert run_cli(songs, "--out", tmp_path / "other", *args, "--layer", "7") == 2
    assert "layer=7 is not a musicnn layer" in capsys.readouterr().err


def embed_cmd(songs: Path, out: Path, *extra: str) -> list[str]:
    code = "import sys; from embedding.cli import main; sys.exit(main(sys.argv[1:]))"
    return [
        sys.executable,
        "-c",
        code,
        str(songs),
        "--out",
        str(out),
        "--encoder",
        "musicnn",
        "--device",
        "cpu",
        *extra,
    ]


@needs_musicnn
@pytest.mark.slow
def test_kill_9_then_resume_matches_a_clean_run(tmp_path, capsys):
    # a few more clips than one part holds, so the run is still going when the first part lands
    n_songs = PART_MIN_SONGS + 4
    songs = tmp_path / "songs"
    for i in range(n_songs):
        write_clip(songs / f"song{i:03d}.wav", 3.0, sr=16000, freq=110 + 7 * i)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ("--batch-size", "8", "--num-workers", "1")

    # start, wait for the first part, SIGKILL
    proc = subprocess.Popen(
        embed_cmd(songs, out, *args),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while (
        not list((out / "parts").glob("part-*.npz"))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # decoding workers must not outlive the killed process
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    # the killed store is refused as incomplete, and partially readable
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "in_progress"
    with pytest.raises(ValueError, match="incomplete.*rerun embed-audio"):
        load_store(out)
    partial = load_store(out, allow_partial=True)
    assert 0 < len(partial) <= n_songs

    # a rerun finishes it
    resumed = subprocess.run(
        embed_cmd(songs, out, *args), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipped {len(partial)} already in the store" in resumed.stdout

    # every song exactly once, vectors equal to a clean run's (this one in-process)
    assert (
        run_cli(
            songs, "--out", tmp_path / "clean", "--encoder", "musicnn", "--device", "cpu", *args
        )
        == 0
    )
    a, b = load_store(out), load_store(tmp_path / "clean")
    assert sorted(a.ids) == sorted(b.ids) == [f"song{i:03d}" for i in range(n_songs)]
    assert len(set(a.ids)) == n_songs
    order = [a.row_of(song_id) for song_id in b.ids]
    np.testing.assert_allclose(a.vectors[order], b.vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        partial.vectors, a.vectors[[a.row_of(i) for i in partial.ids]], rtol=1e-5, atol=1e-6
    )


def test_only_bad_files_gives_an_empty_store_and_exit_1(tmp_path, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    (songs / "a.wav").write_text("not audio")
    (songs / "b.mp3").write_bytes(b"")
    assert (
        run_cli(songs, "--out", tmp_path / "s", "--encoder", "test-mean", "--num-workers", "0") == 1
    )
    store = load_store(tmp_path / "s")
    assert len(store) == 0 and store.vectors.shape == (0, 4)
    assert set(failures_by_id(tmp_path / "s")) == {"a", "b"}
    assert "embedded 0" in capsys.readouterr().out
