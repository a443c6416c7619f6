"""MusicFM against upstream's golden outputs, loaded the way a hub download is loaded."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedding import musicfm
from embedding.encoders import embed_song
from embedding.errors import InputError, WeightsError
from embedding.musicfm import (
    HUB_REPO,
    HUB_STATS,
    HUB_WEIGHTS,
    MusicFM,
    MusicFMConfig,
    ResBlock2d,
    config_from_state,
    make_musicfm,
    mel_filterbank,
    read_checkpoint,
    winograd_conv3x3,
    winograd_weights,
)

pytestmark = pytest.mark.shared

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_SHA256 = "e67011536bae86605bb7a1cfde71b313fd9203284496486c0bbb1ec4d205db73"
# the golden README's tolerance for a re-implementation is 1e-4 on every bin; on a CPU other
# than the reference one the FFT's float32 rounding differs, and the log of a near-silent bin
# magnifies it (1.8e-4 on one AVX-512 machine), so a few bins may go further
TOL_MEL = 5e-4
TOL_MEL_BIN = 2e-5
TOL_REFERENCE = 5e-5
TOL_FAST = 1e-4


@pytest.fixture(scope="module")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "musicfm-golden"


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "golden.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def hub_cache(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache holding the tiny checkpoint under the names of the real files."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / ("models--" + HUB_REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copy(golden_dir / "tiny_checkpoint.pt", snapshot / HUB_WEIGHTS)
    shutil.copy(golden_dir / "stats.json", snapshot / HUB_STATS)
    return cache


@pytest.fixture(scope="module")
def model(hub_cache: Path) -> Iterator[MusicFM]:
    """The tiny model resolved through ``hf_hub_download`` with the hub switched off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield MusicFM.from_pretrained(layer=3, cache_dir=hub_cache)


def _max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().float().numpy() - b).max())


def test_frontend_buffers_equal_the_checkpoint_copies(golden_dir: Path, model: MusicFM) -> None:
    state = read_checkpoint(golden_dir / "tiny_checkpoint.pt")
    prefix = "preprocessor_melspec_2048.mel_stft."
    fb = mel_filterbank(1025, 128, sr=24000, f_max=12000.0)
    assert torch.equal(fb, state[prefix + "mel_scale.fb"])

    # torch's float32 Hann window agrees to the last bit or so (its cos kernel depends on the
    # CPU), so the loaded model runs on the checkpoint's own copies
    window = state[prefix + "spectrogram.window"]
    torch.testing.assert_close(torch.hann_window(2048), window, rtol=0, atol=1e-6)
    assert torch.equal(model.frontend.window, window)
    assert torch.equal(model.frontend.fb, state[prefix + "mel_scale.fb"])


@pytest.mark.parametrize("prefix", ["", "odd_"])
def test_melspec_matches_golden(model: MusicFM, golden: dict[str, np.ndarray], prefix: str) -> None:
    with torch.inference_mode():
        mel = model.melspec(torch.from_numpy(golden[prefix + "wav"]))
    assert mel.shape == golden[prefix + "melspec_norm"].shape
    diff = np.abs(mel.numpy() - golden[prefix + "melspec_norm"])
    assert (diff > TOL_MEL_BIN).mean() < 1e-3  # nearly every bin to float32 rounding
    assert diff.max() <= TOL_MEL


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("prefix", ["", "odd_"])
def test_hidden_states_match_golden(
    model: MusicFM, golden: dict[str, np.ndarray], prefix: str, fast: bool
) -> None:
    # every layer at once, and each layer alone through the early-stopping path
    wav = torch.from_numpy(golden[prefix + "wav"])
    expected = golden[prefix + "hidden_states"]  # (L + 1, B, T, D)
    tol = TOL_FAST if fast else TOL_REFERENCE
    with torch.inference_mode():
        states = model.all_hidden_states(wav, fast=fast)
        assert len(states) == len(expected) == model.n_layers + 1
        for i, state in enumerate(states):
            assert state.shape == expected[i].shape
            assert _max_diff(state, expected[i]) <= tol, f"layer {i}"
            alone = model.hidden_states(wav, layer=i, fast=fast)
            assert torch.equal(alone, state)


def test_layer_runs_only_the_blocks_it_needs(model: MusicFM, golden: dict[str, np.ndarray]) -> None:
    # count calls of every block and of the encoder LayerNorm
    calls = {"norm": 0, **{i: 0 for i in range(model.n_layers)}}
    hooks = [model.conformer.layer_norm.register_forward_hook(lambda *_: _count(calls, "norm"))]
    for i, block in enumerate(model.conformer.layers):
        hooks.append(block.register_forward_hook(lambda *_, i=i: _count(calls, i)))
    wav = torch.from_numpy(golden["odd_wav"])
    try:
        with torch.inference_mode():
            model.hidden_states(wav, layer=1)
            assert calls == {"norm": 0, 0: 1, 1: 0, 2: 0}
            model.hidden_states(wav, layer=0, fast=False)
            assert calls == {"norm": 0, 0: 1, 1: 0, 2: 0}
            model.hidden_states(wav)  # the model's default layer, 3 = the last one here
            assert calls == {"norm": 1, 0: 2, 1: 1, 2: 1}
    finally:
        for hook in hooks:
            hook.remove()


def _count(calls: dict, key: object) -> None:
    calls[key] += 1


def test_bad_layer_and_shape_raise(model: MusicFM) -> None:
    with pytest.raises(InputError, match="layer=4 is outside 0..3"):
        model.hidden_states(torch.zeros(1, 24000), layer=4)
    with pytest.raises(InputError, match=r"shape \(batch, n_samples\)"):
        model.hidden_states(torch.zeros(24000))


def _file_layout(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype))
    return rows


def test_full_size_layout_equals_the_released_file(golden_dir: Path) -> None:
    # the module built without memory, converted to the file's view, in file order
    with torch.device("meta"):
        full = MusicFM(MusicFMConfig())
    ours = [(k, shape, str(dtype)) for k, (shape, dtype) in full.checkpoint_layout().items()]
    assert ours == _file_layout(golden_dir / "full_size_keys.txt")
    assert sum(p.numel() for p in full.parameters()) > 300_000_000

    # and the sizes read back from those shapes, heads included, are the released config
    state = {k: torch.empty(shape, device="meta") for k, shape, _ in ours}
    assert config_from_state(state) == MusicFMConfig()


def test_tiny_layout_equals_the_tiny_checkpoint(golden_dir: Path, model: MusicFM) -> None:
    blob = torch.load(golden_dir / "tiny_checkpoint.pt", map_location="cpu", weights_only=True)
    stored = [(k.removeprefix("model."), tuple(v.shape)) for k, v in blob["state_dict"].items()]
    assert [(k, shape) for k, (shape, _) in model.checkpoint_layout().items()] == stored
    assert model.cfg.n_heads == 4 and model.cfg.head_dim == 16


def test_missing_and_unexpected_keys_are_named(golden_dir: Path, tmp_path: Path) -> None:
    blob = torch.load(golden_dir / "tiny_checkpoint.pt", map_location="cpu", weights_only=True)
    state = blob["state_dict"]
    del state["model.conformer.layers.1.ffn2_layer_norm.bias"]
    state["model.conformer.layers.1.extra_gate.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "broken.pt")
    stats = golden_dir / "stats.json"
    with pytest.raises(WeightsError, match=r"missing keys=\['conformer.layers.1.ffn2_layer_norm"):
        MusicFM.from_pretrained(tmp_path / "broken.pt", stats, layer=3)
    with pytest.raises(WeightsError, match=r"unexpected keys=\['conformer.layers.1.extra_gate"):
        MusicFM.from_pretrained(tmp_path / "broken.pt", stats, layer=3)


def test_wrong_shape_and_bad_stats_raise(golden_dir: Path, tmp_path: Path) -> None:
    blob = torch.load(golden_dir / "tiny_checkpoint.pt", map_location="cpu", weights_only=True)
    blob["state_dict"]["model.conformer.layers.2.ffn1.output_dense.bias"] = torch.zeros(65)
    torch.save(blob, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match="ffn1.output_dense.bias: \\(65,\\) != \\(64,\\)"):
        MusicFM.from_pretrained(tmp_path / "shape.pt", golden_dir / "stats.json", layer=3)
    (tmp_path / "stats.json").write_text('{"melspec_2048_mean": 1.0}')
    with pytest.raises(WeightsError, match="melspec_2048_std"):
        MusicFM.from_pretrained(golden_dir / "tiny_checkpoint.pt", tmp_path / "stats.json")


def test_heads_override_must_fit_the_rotary_table(golden_dir: Path) -> None:
    args = (golden_dir / "tiny_checkpoint.pt", golden_dir / "stats.json")
    assert MusicFM.from_pretrained(*args, layer=3, n_heads=4).cfg.n_heads == 4
    with pytest.raises(WeightsError, match="n_heads=8 does not fit.*head_dim=16"):
        MusicFM.from_pretrained(*args, layer=3, n_heads=8)


def test_missing_weights_offline_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="huggingface-cli download minzwon/MusicFM") as err:
        MusicFM.from_pretrained(cache_dir=tmp_path / "empty-cache")
    assert "--encoder musicnn" in str(err.value) and "--weights" in str(err.value)
    with pytest.raises(WeightsError, match="does not exist"):
        MusicFM.from_pretrained(tmp_path / "nowhere.pt", tmp_path / "nowhere.json")


def test_local_dir_layout_is_found_offline(
    golden_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: MusicFM
) -> None:
    shutil.copy(golden_dir / "tiny_checkpoint.pt", tmp_path / HUB_WEIGHTS)
    shutil.copy(golden_dir / "stats.json", tmp_path / HUB_STATS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = MusicFM.from_pretrained(layer=3, local_dir=tmp_path)
    for a, b in zip(local.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_encoder_embeds_the_time_mean_of_its_layer(
    golden_dir: Path, golden: dict[str, np.ndarray], model: MusicFM
) -> None:
    # the registered factory, pointed at local files
    encoder = make_musicfm(
        str(golden_dir / "tiny_checkpoint.pt"),
        str(golden_dir / "stats.json"),
        layer=2,
        device="cpu",
        batch_size=1,
    )
    assert (encoder.name, encoder.sample_rate, encoder.dim) == ("musicfm", 24000, 64)
    config = encoder.config()
    assert config["weights"] == "tiny_checkpoint.pt" and config["weights_sha256"] == TINY_SHA256
    assert config["layer"] == 2 and config["dtype"] == "float32"
    assert config["stats"]["melspec_2048_std"] == pytest.approx(18.417922652295623)

    # a batch of two windows gives each window's own time-mean of layer 2
    out = encoder.forward(torch.from_numpy(golden["wav"]))
    expected = golden["hidden_states"][2].mean(axis=1)
    assert out.tags is None and out.vectors.shape == (2, 64)
    assert np.abs(out.vectors - expected).max() <= TOL_FAST

    # a whole clip: the 3.3 s odd clip is one window
    vector, _ = embed_song(encoder, golden["odd_wav"][0])
    assert np.abs(vector - golden["odd_hidden_states"][2, 0].mean(axis=0)).max() <= TOL_FAST


def test_sha256_matches_a_direct_hash(golden_dir: Path) -> None:
    from embedding.musicfm import file_sha256

    path = golden_dir / "tiny_checkpoint.pt"
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() == TINY_SHA256


def test_dtypes(golden_dir: Path, golden: dict[str, np.ndarray]) -> None:
    args = (golden_dir / "tiny_checkpoint.pt", golden_dir / "stats.json")
    with pytest.raises(InputError, match="float16 needs CUDA"):
        MusicFM.from_pretrained(*args, layer=3, dtype="float16")
    with pytest.raises(InputError, match="dtype='int8'"):
        MusicFM.from_pretrained(*args, layer=3, dtype="int8")

    # bfloat16 runs (on a GPU it is the fast option) and stays near the float32 result
    bf16 = MusicFM.from_pretrained(*args, layer=3, dtype="bfloat16")
    with torch.inference_mode():
        state = bf16.hidden_states(torch.from_numpy(golden["odd_wav"]), layer=2)
    assert state.dtype == torch.bfloat16
    assert _max_diff(state, golden["odd_hidden_states"][2]) < 0.25


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize(
    "shape",
    [(1, 3, 5, 7, 9), (2, 64, 32, 8, 12), (3, 16, 24, 13, 6), (2, 8, 8, 1, 1)],
    ids=["odd", "even-batch", "mixed-batch", "one-pixel"],
)
def test_winograd_conv_equals_the_direct_conv(
    shape: tuple[int, int, int, int, int], m: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # random kernels and bias, several chunks of tile rows per image
    monkeypatch.setattr(musicfm, "WINOGRAD_CHUNK_TILES", 4)
    B, c_in, c_out, H, W = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(B, c_in, H, W, generator=gen)
    weight = torch.randn(c_out, c_in, 3, 3, generator=gen) / (3 * c_in**0.5)
    bias = torch.randn(c_out, generator=gen)

    # against F.conv2d, with and without the bias
    u = winograd_weights(weight, m=m)
    assert u.shape == ((m + 2) ** 2, c_out, c_in)
    for b in (bias, None):
        expected = F.conv2d(x, weight, b, padding=1)
        got = winograd_conv3x3(x, u, b)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("c_in", [1, 16], ids=["mel-image", "wide"])
def test_fast_res_block_equals_the_reference(c_in: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # a block wide enough for the Winograd conv, with BatchNorms that do something
    torch.manual_seed(c_in)
    block = ResBlock2d(c_in, musicfm.WINOGRAD_MIN_CHANNELS, eps=1e-5).eval()
    with torch.no_grad():
        for bn in (block.bn1, block.bn2, block.bn3):
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    calls: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return winograd_conv3x3(x, u, bias)

    monkeypatch.setattr(musicfm, "winograd_conv3x3", spy)

    # fast and reference paths on an odd-sized batch of two
    x = torch.randn(2, c_in, 11, 14)
    with torch.inference_mode():
        expected = block(x)
        got = block(x, fast=True)
    assert calls == [(2, musicfm.WINOGRAD_MIN_CHANNELS, 6, 7)]
    assert got.shape == expected.shape == (2, musicfm.WINOGRAD_MIN_CHANNELS, 6, 7)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
