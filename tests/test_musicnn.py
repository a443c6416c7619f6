"""Tests of the musicnn port: goldens from the original TF package, weights, windowing, encoder.

The goldens (``../shared/data/musicnn/golden_msd.npz``) were made with musicnn 0.1.0 on
tensorflow-cpu 2.15.1, numpy 1.26.4, librosa 0.11.0, soundfile 0.14.0 and soxr 1.1.0; tolerances
are those the data's README measured for a faithful port.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from embedding.encoders import embed_song, forward_windows, get_encoder, split_windows
from embedding.errors import AudioError, InputError, WeightsError
from embedding.musicnn import (
    Musicnn,
    MusicnnEncoder,
    audio_to_logmel,
    audio_to_mel16,
    convert_tf_variables,
    format_tags,
    logmel_to_patches,
    mel16_to_logmel,
    tf_to_state_dict,
)

CLIPS = {
    "brahms_hungarian_dance_5": "brahms_hungarian_dance_5.ogg",
    "macleod_vibe_ace": "macleod_vibe_ace.ogg",
    "arovane_beat_a": "arovane_beat_a.flac",
}
# max abs difference allowed per stage (README of the goldens: these pass with margin)
STAGE_TOL = {
    "frontend": 2e-4,
    "cnn1": 2e-4,
    "cnn2": 3e-3,
    "cnn3": 3e-3,
    "max_pool": 3e-3,
    "mean_pool": 2e-4,
    "pool_flat": 3e-3,
    "penultimate": 1e-4,
    "logits": 1e-4,
    "taggram": 1e-5,
}
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "embedding" / "weights"
SR = 16000


@pytest.fixture(scope="module")
def golden(shared_dir: Path) -> dict[str, np.ndarray]:
    with np.load(shared_dir / "musicnn" / "golden_msd.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def encoder() -> MusicnnEncoder:
    enc = get_encoder("musicnn", device="cpu")
    assert isinstance(enc, MusicnnEncoder)
    return enc


# ---------------------------------------------------------------------------------------------
# goldens


@pytest.mark.shared
@pytest.mark.parametrize("clip", list(CLIPS))
def test_every_stage_matches_tf_golden(
    clip: str, golden: dict[str, np.ndarray], encoder: MusicnnEncoder
) -> None:
    # the golden patches in, every stage compared in TF layout (B, T, C)
    with torch.inference_mode():
        stages = encoder.model.stages(torch.from_numpy(golden[f"{clip}__patches"]))
    for name, tol in STAGE_TOL.items():
        ours = stages[name].numpy()
        if ours.ndim == 3:
            ours = ours.transpose(0, 2, 1)
        ref = golden[f"{clip}__{name}"]
        assert ours.shape == ref.shape, name
        err = float(np.abs(ours - ref).max())
        assert err <= tol, f"{clip} {name}: max abs diff {err:.2e} > {tol:.0e}"

    # each patch its own penultimate, not patch 1's repeated as the original extractor returns
    assert (
        np.abs(stages["penultimate"].numpy() - golden[f"{clip}__extractor_penultimate"]).max() > 0.1
    )


@pytest.mark.shared
def test_pooling_is_interleaved(golden: dict[str, np.ndarray], encoder: MusicnnEncoder) -> None:
    # [max_0, mean_0, max_1, mean_1, ...]; the concatenated order would be a different network
    with torch.inference_mode():
        out = encoder.model.stages(torch.from_numpy(golden["arovane_beat_a__patches"][:1]))
    flat = out["pool_flat"].numpy()
    np.testing.assert_array_equal(flat[:, 0::2], out["max_pool"].numpy())
    np.testing.assert_array_equal(flat[:, 1::2], out["mean_pool"].numpy())


def _libm_log10f() -> np.ufunc | None:
    # the C library's log10f, which numpy 1.26 used for float32 and numpy >= 2 no longer does
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    fn = ctypes.CDLL(name).log10f
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.frompyfunc(fn, 1, 1)


@pytest.mark.shared
@pytest.mark.parametrize("clip", list(CLIPS))
def test_audio_to_logmel_matches_golden(clip: str, golden: dict[str, np.ndarray]) -> None:
    """The log-mel is within one float32 ulp of the golden, bar float16 rounding-boundary ties.

    The one-ulp difference is numpy's: numpy 1.26 (goldens) took float32 log10 from the C
    library, numpy >= 2 has its own SIMD version. With the C library's log10f the whole recipe
    is bit-exact, which the arovane case checks. A mel value that lies within float32 rounding
    of a float16 midpoint can round to the neighbouring float16 (seen: one bin of 368,832 in
    vibe_ace); such a bin differs by one float16 step, which the log turns into < 3e-4.
    """
    # within one ulp (values < 8, so one ulp <= 9.5e-7), except at most 1 bin in 10,000
    logmel = audio_to_logmel(golden[f"{clip}__audio"])
    ref = golden[f"{clip}__logmel"]
    assert logmel.shape == ref.shape and logmel.dtype == np.float32
    diff = np.abs(logmel - ref)
    off = diff > float(np.spacing(np.float32(8)))
    assert off.sum() <= ref.size // 10_000
    assert diff.max() <= 3e-4

    # bit-exact before the log: the log of our float16-rounded mel with log10f is the golden
    log10f = _libm_log10f()
    if clip == "arovane_beat_a" and log10f is not None:
        prod = np.float32(10000) * audio_to_mel16(golden[f"{clip}__audio"]) + np.float32(1)
        np.testing.assert_array_equal(log10f(prod).astype(np.float32), ref)

    # patches are plain slices of the log-mel
    np.testing.assert_array_equal(logmel_to_patches(ref), golden[f"{clip}__patches"])


@pytest.mark.shared
@pytest.mark.parametrize("clip", list(CLIPS))
def test_split_windows_reproduce_whole_clip_patches(
    clip: str, golden: dict[str, np.ndarray], encoder: MusicnnEncoder
) -> None:
    # the same number of patches as the package, every window 48,128 samples
    y = golden[f"{clip}__audio"]
    windows = encoder.split(y)
    ref = golden[f"{clip}__patches"]
    assert len(windows) == len(ref)
    assert {len(w) for w in windows} == {encoder.cfg.window_samples}

    # the same frames: differences only where float rounding flips a float16 (one float16 ulp,
    # at most log10(1 + 2**-10) = 4.24e-4) in a tiny share of bins
    patches = encoder.windows_to_patches(np.stack(windows))
    diff = np.abs(patches - ref)
    assert diff.max() <= 4.3e-4
    assert (diff > 1e-6).mean() < 1e-4


@pytest.mark.shared
def test_from_audio_file_end_to_end(shared_dir: Path, golden: dict[str, np.ndarray]) -> None:
    """File → vectors, loosely: decoding and resampling depend on library versions.

    The goldens' audio came from ``librosa.load(path, sr=16000)`` with libsndfile 1.2.2 and soxr
    1.1.0 (resampler ``soxr_hq``). Here it was bit-exact with the same versions, but another
    libsndfile/libvorbis, resampler or librosa default (older librosa used resampy) shifts the
    samples, so only a loose bound is asserted: penultimate within 0.05, taggram within 5e-3.
    """
    # decode, down-mix and resample the way the package does
    clip = "arovane_beat_a"
    y, sr = librosa.load(shared_dir / "audio" / CLIPS[clip], sr=SR)
    assert sr == SR and len(y) == len(golden[f"{clip}__audio"])
    enc = get_encoder("musicnn", device="cpu")
    assert isinstance(enc, MusicnnEncoder)
    out = enc.embed_clip(y)

    # close to the per-patch goldens
    assert out.tags is not None
    assert np.abs(out.vectors - golden[f"{clip}__penultimate"]).max() < 0.05
    assert np.abs(out.tags - golden[f"{clip}__taggram"]).max() < 5e-3

    # and tagged as electronic music
    assert enc.tag_names is not None
    top = [enc.tag_names[i] for i in np.argsort(-out.tags.mean(axis=0))[:5]]
    assert "electronic" in top
    assert enc.tags_for(out.tags).startswith("electronic ")


# ---------------------------------------------------------------------------------------------
# weights


def test_shipped_files_match_their_readme() -> None:
    # the sha256 list in weights/README.md is the files' own
    readme = (WEIGHTS_DIR / "README.md").read_text()
    listed = dict(
        (name, sha) for sha, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.MULTILINE)
    )
    assert set(listed) == {"musicnn_msd.npz", "musicnn_msd_tags.txt", "LICENSE-musicnn.txt"}
    for name, sha in listed.items():
        assert hashlib.sha256((WEIGHTS_DIR / name).read_bytes()).hexdigest() == sha, name
    assert "ISC" in readme and "Jordi Pons" in readme


@pytest.mark.shared
def test_shipped_weights_equal_tf_export(shared_dir: Path) -> None:
    # converting the TF export again gives the shipped arrays bit for bit
    musicnn_dir = shared_dir / "musicnn"
    with np.load(musicnn_dir / "msd_musicnn.npz") as npz:
        converted = tf_to_state_dict({k: npz[k] for k in npz.files})
    with np.load(WEIGHTS_DIR / "musicnn_msd.npz") as npz:
        shipped = {k: npz[k] for k in npz.files}
    assert set(converted) == set(shipped)
    for name, arr in converted.items():
        assert shipped[name].dtype == np.float32
        np.testing.assert_array_equal(shipped[name], arr, err_msg=name)
    assert sum(a.size for a in shipped.values()) == 792_079

    # tags and licence are the package's
    assert (WEIGHTS_DIR / "musicnn_msd_tags.txt").read_bytes() == (
        musicnn_dir / "tags_msd.txt"
    ).read_bytes()
    assert (WEIGHTS_DIR / "LICENSE-musicnn.txt").read_bytes() == (
        musicnn_dir / "LICENSE-musicnn.txt"
    ).read_bytes()


@pytest.mark.shared
def test_convert_and_load_other_weights(shared_dir: Path, tmp_path: Path) -> None:
    # MTT weights converted with their tags load through the factory and match the MTT goldens
    musicnn_dir = shared_dir / "musicnn"
    mtt_tags = (musicnn_dir / "tags_mtt.txt").read_text().splitlines()
    out = tmp_path / "mtt.npz"
    sha = convert_tf_variables(musicnn_dir / "mtt_musicnn.npz", out, tags=mtt_tags)
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    enc = get_encoder("musicnn", device="cpu", weights=out)
    assert isinstance(enc, MusicnnEncoder) and enc.tag_names == mtt_tags
    assert enc.config()["weights_sha256"] == sha

    with np.load(musicnn_dir / "golden_msd.npz") as g, np.load(musicnn_dir / "golden_mtt.npz") as m:
        patches = g["arovane_beat_a__patches"][:2]
        res = enc.forward_patches(patches)
        assert res.tags is not None
        assert np.abs(res.tags - m["arovane_beat_a__taggram"][:2]).max() < 1e-5
        assert np.abs(res.vectors - m["arovane_beat_a__penultimate"][:2]).max() < 1e-4

    # the TF-named export loads as it is, giving the same vectors, without tag names
    raw = get_encoder("musicnn", device="cpu", weights=musicnn_dir / "mtt_musicnn.npz")
    assert isinstance(raw, MusicnnEncoder) and raw.tag_names is None
    raw_out = raw.forward_patches(patches)
    assert raw_out.tags is None
    np.testing.assert_array_equal(raw_out.vectors, res.vectors)


def test_bad_weights_and_options(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        get_encoder("musicnn", device="cpu", weights=tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    state = {k: v.numpy() for k, v in Musicnn().state_dict().items() if "num_batches" not in k}
    state["backend.out.bias"] = np.zeros(7, dtype=np.float32)
    np.savez(bad, **state)
    with pytest.raises(WeightsError, match=r"backend\.out\.bias has shape=\(7,\)"):
        get_encoder("musicnn", device="cpu", weights=bad)
    del state["backend.out.bias"]
    np.savez(bad, **state)
    with pytest.raises(WeightsError, match="missing=\\['backend.out.bias'\\]"):
        get_encoder("musicnn", device="cpu", weights=bad)
    with pytest.raises(WeightsError, match="missing"):
        tf_to_state_dict({"conv2d/kernel": np.zeros((7, 38, 1, 204), np.float32)})
    with pytest.raises(InputError, match="stats="):
        get_encoder("musicnn", device="cpu", stats=tmp_path / "stats.npz")
    with pytest.raises(InputError, match="dtype='float64'"):
        get_encoder("musicnn", device="cpu", dtype="float64")


# ---------------------------------------------------------------------------------------------
# encoder contract and windowing


def test_encoder_contract_on_a_7s_clip(encoder: MusicnnEncoder, rng: np.random.Generator) -> None:
    # identity
    assert (encoder.name, encoder.sample_rate, encoder.dim) == ("musicnn", SR, 200)
    assert encoder.tag_names is not None and len(encoder.tag_names) == 50
    assert encoder.window.window_seconds == pytest.approx(187 * 256 / SR)
    assert encoder.window.min_seconds == pytest.approx(186 * 256 / SR)
    json.dumps(encoder.meta())

    # a 7 s clip: two patches, one vector and one tag row, deterministic
    y = (0.1 * rng.standard_normal(7 * SR)).astype(np.float32)
    assert len(encoder.split(y)) == 2
    vector, tags = embed_song(encoder, y)
    assert vector.shape == (200,) and vector.dtype == np.float32
    assert tags is not None and tags.shape == (50,)
    assert np.all(np.isfinite(vector)) and np.all((tags > 0) & (tags < 1))
    vector2, tags2 = embed_song(encoder, y)
    np.testing.assert_array_equal(vector, vector2)
    np.testing.assert_array_equal(tags, tags2)

    # the windowed path and the whole-clip path agree
    whole = encoder.embed_clip(y)
    assert np.abs(whole.vectors.mean(axis=0) - vector).max() < 1e-3


def test_split_counts_patches_like_the_package(encoder: MusicnnEncoder) -> None:
    # (1 + n // 256) // 187 patches: a patch whose last frame is centred past the end still counts
    for n, expected in [(47_616, 1), (47_871, 1), (2 * 47_872 - 257, 1), (2 * 47_872 - 256, 2)]:
        assert len(encoder.split(np.zeros(n, np.float32))) == expected, n
        assert logmel_to_patches(np.zeros((1 + n // 256, 96), np.float32)).shape[0] == expected
    with pytest.raises(AudioError, match="clip too short: duration=2.976s"):
        encoder.split(np.zeros(47_615, np.float32))
    with pytest.raises(InputError, match="mono"):
        encoder.split(np.zeros((2, 50_000), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        audio_to_logmel(np.full(50_000, np.nan, np.float32))


def test_plain_windows_are_accepted(encoder: MusicnnEncoder, rng: np.random.Generator) -> None:
    # split_windows with the encoder's rule gives windows forward accepts, as standalone clips
    y = (0.1 * rng.standard_normal(2 * 47_872 + 47_700)).astype(np.float32)
    windows = split_windows(y, SR, encoder.window)
    assert [len(w) for w in windows] == [47_872, 47_872, 47_700]
    out = forward_windows(encoder, windows)
    assert out.vectors.shape == (3, 200) and np.all(np.isfinite(out.vectors))

    # a standalone window equals embedding that window as a clip of its own
    alone = encoder.embed_clip(windows[1])
    assert np.abs(alone.vectors[0] - out.vectors[1]).max() < 1e-3
    with pytest.raises(InputError, match="n_samples=40000"):
        encoder.forward(torch.zeros(1, 40_000))


def test_log_compression_stays_finite_for_loud_bins() -> None:
    # numpy >= 2 would keep musicnn's literal line in float16 and overflow above mel = 6.55
    mel16 = np.array([0.0, 1.0, 7.0, 60000.0], dtype=np.float16).astype(np.float32)
    logmel = mel16_to_logmel(mel16)
    assert logmel.dtype == np.float32 and np.all(np.isfinite(logmel))
    np.testing.assert_allclose(logmel, np.log10(10000 * mel16.astype(np.float64) + 1), rtol=1e-6)


@pytest.mark.parametrize("layer", ["mean_pool", "max_pool"])
def test_pooled_layers_as_vectors(
    layer: str, encoder: MusicnnEncoder, rng: np.random.Generator
) -> None:
    # the pooled layer's 753 channels, with the same taggram as the default encoder
    pooled = get_encoder("musicnn", device="cpu", layer=layer)
    assert isinstance(pooled, MusicnnEncoder)
    assert pooled.dim == 753 and pooled.config()["layer"] == layer
    assert encoder.config()["layer"] == "penultimate"
    y = (0.1 * rng.standard_normal(7 * SR)).astype(np.float32)
    out = forward_windows(pooled, pooled.split(y))
    patches = pooled.windows_to_patches(np.stack(pooled.split(y)))
    with torch.no_grad():
        expected = pooled.model.stages(torch.from_numpy(patches))[layer].numpy()
    np.testing.assert_allclose(out.vectors, expected, rtol=1e-5, atol=1e-5)
    assert out.tags is not None
    np.testing.assert_array_equal(out.tags, forward_windows(encoder, encoder.split(y)).tags)

    # tags come from the taggram only: a pooled vector has no output layer to go through
    with pytest.raises(InputError, match=r"taggram shape=\(753,\) does not fit 50 tag names"):
        pooled.tags_for(out.vectors[0])


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(InputError, match="layer='pool_flat' is not a musicnn layer; use one of"):
        get_encoder("musicnn", device="cpu", layer="pool_flat")
    with pytest.raises(InputError, match="layer=7 is not a musicnn layer"):
        get_encoder("musicnn", device="cpu", layer=7)


def test_format_tags_and_tags_for(encoder: MusicnnEncoder) -> None:
    names = ["rock", "guitar", "jazz", "pop"]
    assert (
        format_tags(np.array([0.81, 0.64, 0.1, 0.2]), names) == "rock 0.81, guitar 0.64, pop 0.20"
    )
    rows = np.array([[0.8, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.0]])
    assert format_tags(rows, names, top=2) == "rock 0.40, guitar 0.30"
    with pytest.raises(InputError, match="does not fit 4 tag names"):
        format_tags(np.zeros(5), names)

    # a penultimate vector goes through the output layer first
    vec = np.zeros(200, np.float32)
    with torch.no_grad():
        probs = torch.sigmoid(encoder.model.backend.out.bias).numpy()
    assert encoder.tags_for(vec, top=1) == format_tags(probs, encoder.tag_names or [], top=1)


def test_bfloat16_runs_close_to_float32(encoder: MusicnnEncoder, rng: np.random.Generator) -> None:
    # reduced precision, loosely: bf16 keeps ~3 significant digits
    y = (0.1 * rng.standard_normal(47_872)).astype(np.float32)
    ref = encoder.embed_clip(y)
    half_encoder = get_encoder("musicnn", device="cpu", dtype="bfloat16")
    assert isinstance(half_encoder, MusicnnEncoder)
    half = half_encoder.embed_clip(y)
    assert half.vectors.dtype == np.float32
    assert np.abs(half.vectors - ref.vectors).max() < 0.3
    assert ref.tags is not None and half.tags is not None
    assert np.abs(half.tags - ref.tags).max() < 0.03


# ---------------------------------------------------------------------------------------------
# every clip in ../shared/data/audio


def _load_16k(path: Path, *, max_seconds: float) -> np.ndarray:
    # soundfile first (only the needed frames), librosa for formats it cannot read
    try:
        with sf.SoundFile(path) as f:
            native_sr = f.samplerate
            y = f.read(int(max_seconds * native_sr), dtype="float32", always_2d=True).mean(axis=1)
    except sf.LibsndfileError:
        y, native_sr = librosa.load(path, sr=None, mono=True, duration=max_seconds)
    return librosa.resample(y, orig_sr=native_sr, target_sr=SR).astype(np.float32)


@pytest.mark.shared
def test_all_shared_clips_embed_to_finite_vectors(
    shared_dir: Path, encoder: MusicnnEncoder
) -> None:
    paths = sorted(p for p in (shared_dir / "audio").iterdir() if p.suffix != ".md")
    assert len(paths) == 14
    for path in paths:
        y = _load_16k(path, max_seconds=10.0)
        vector, tags = embed_song(encoder, y)
        assert vector.shape == (200,) and np.all(np.isfinite(vector)), path.name
        assert tags is not None and np.all(np.isfinite(tags)), path.name
