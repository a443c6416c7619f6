"""Tests of audio decoding: formats, resampling, down-mixing, length cap, silence, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embedding.audio import is_audio_path, load_audio
from embedding.errors import AudioError, InputError


def sine(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("ending", ["wav", "flac", "ogg", "mp3"])
def test_formats_decode_and_resample(tmp_path, ending):
    path = tmp_path / f"clip.{ending}"
    sf.write(path, np.stack([sine(2.0, 22050), sine(2.0, 22050)], axis=1), 22050)
    y = load_audio(path, sr=16000)
    assert y.dtype == np.float32 and y.ndim == 1
    # mp3 adds encoder delay and padding; the lossless ones keep the length exactly
    assert abs(len(y) - 32000) <= (2000 if ending == "mp3" else 0)
    assert peak_hz(y, 16000) == pytest.approx(440, abs=1)
    assert 0.3 < float(np.sqrt(np.mean(y**2))) < 0.4  # 0.5 / sqrt(2), minus lossy loss


def test_8k_clip_is_resampled_without_shifting_pitch(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(path, sine(1.5, 8000, freq=1000), 8000)
    y = load_audio(path, sr=24000)
    assert len(y) == 36000
    assert peak_hz(y, 24000) == pytest.approx(1000, abs=1)
    # nothing above the old Nyquist frequency appears
    spectrum = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / 24000)
    assert spectrum[freqs > 4100].max() < 1e-3 * spectrum.max()


def test_5_1_is_down_mixed_by_channel_mean(tmp_path, rng):
    channels = rng.uniform(-0.5, 0.5, size=(16000, 6)).astype(np.float32)
    path = tmp_path / "surround.wav"
    sf.write(path, channels, 16000, subtype="FLOAT")
    y = load_audio(path, sr=16000)
    np.testing.assert_allclose(y, channels.mean(axis=1), atol=1e-6)


def test_max_seconds_caps_exactly(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, sine(5.0, 44100), 44100)
    assert len(load_audio(path, sr=16000, max_seconds=2.5)) == 40000
    assert len(load_audio(path, sr=16000, max_seconds=60)) == 80000
    with pytest.raises(InputError, match="max_seconds=0"):
        load_audio(path, sr=16000, max_seconds=0)
    with pytest.raises(InputError, match="sr=-1"):
        load_audio(path, sr=-1)


def test_silence_is_returned_with_a_warning(tmp_path, caplog):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    with caplog.at_level(logging.WARNING, logger="encore.embedding"):
        y = load_audio(path, sr=16000)
    assert len(y) == 16000 and not y.any()
    assert "is silent" in caplog.text


def test_loud_audio_gives_no_warning(tmp_path, caplog):
    path = tmp_path / "loud.wav"
    sf.write(path, sine(1.0, 16000), 16000)
    with caplog.at_level(logging.WARNING, logger="encore.embedding"):
        load_audio(path, sr=16000)
    assert "silent" not in caplog.text


def make_bad(tmp_path: Path, kind: str) -> Path:
    """One unusable file of each kind."""
    if kind == "empty":
        path = tmp_path / "empty.mp3"
        path.write_bytes(b"")
    elif kind == "not audio":
        path = tmp_path / "notes.wav"
        path.write_text("these are not samples\n" * 50)
    elif kind == "directory":
        path = tmp_path / "album.flac"
        path.mkdir()
    elif kind == "missing":
        path = tmp_path / "gone.ogg"
    elif kind == "zero-length":
        path = tmp_path / "nothing.wav"
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "nan":
        path = tmp_path / "nan.wav"
        y = sine(0.5, 16000)
        y[100] = np.nan
        y[200] = np.inf
        sf.write(path, y, 16000, subtype="FLOAT")
    else:
        whole = tmp_path / "whole.flac"
        sf.write(whole, sine(2.0, 16000), 16000)
        path = tmp_path / "corrupt.flac"
        path.write_bytes(whole.read_bytes()[:3000])
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"empty file \(0 bytes\)"),
        ("not audio", "cannot decode.*not audio"),
        ("directory", "is a directory"),
        ("missing", "file not found"),
        ("zero-length", "zero-length audio"),
        ("nan", "2 NaN or infinite samples"),
        ("corrupt", "cannot decode.*corrupt"),
    ],
)
def test_bad_files_raise_audio_error_with_reason(tmp_path, kind, message):
    with pytest.raises(AudioError, match=message):
        load_audio(make_bad(tmp_path, kind), sr=16000)


def test_audio_paths():
    assert is_audio_path(Path("a/b/Song.MP3"))
    assert is_audio_path(Path("x.flac"))
    assert not is_audio_path(Path("cover.jpg"))
    assert not is_audio_path(Path("._song.mp3"))


@pytest.mark.shared
@pytest.mark.parametrize(
    "name",
    [
        "sorohan_trumpet_loop.ogg",
        "tabla_loop.flac",
        "arovane_beat_a.flac",  # 24-bit
        "macleod_danse_macabre_finale.mp3",
        "woodward_dead_code.wav",  # 10512 Hz mono
    ],
)
def test_shared_clips_decode(shared_dir, name):
    y = load_audio(shared_dir / "audio" / name, sr=16000, max_seconds=3)
    assert y.dtype == np.float32 and y.shape == (48000,)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert float(np.sqrt(np.mean(y**2))) > 1e-3


@pytest.mark.shared
@pytest.mark.parametrize(
    "clip, name",
    [
        ("brahms_hungarian_dance_5", "brahms_hungarian_dance_5.ogg"),  # 44.1 kHz stereo
        ("arovane_beat_a", "arovane_beat_a.flac"),  # 44.1 kHz, 24-bit
    ],
)
def test_decoding_equals_the_musicnn_goldens_audio(shared_dir, clip, name):
    # the goldens hold librosa.load(path, sr=16000) of the original pipeline; the same decoder
    # and resampler versions give the same samples, length included (ceil(n * 16000 / sr))
    y = load_audio(shared_dir / "audio" / name, sr=16000)
    ref = np.load(shared_dir / "musicnn" / "golden_msd.npz")[f"{clip}__audio"]
    assert y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


def test_resampled_length_is_rounded_up(tmp_path):
    # 1001 frames at 44.1 kHz -> ceil(1001 * 16000 / 44100) = 364 samples
    sf.write(tmp_path / "odd.wav", sine(1.0, 44100)[:1001], 44100)
    assert load_audio(tmp_path / "odd.wav", sr=16000).shape == (364,)
