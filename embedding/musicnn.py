"""musicnn (MSD_musicnn), ported to PyTorch, with its pretrained weights shipped in the package.

musicnn (Jordi Pons, MTG-UPF; ISC licence) is a musically motivated CNN trained to tag 3 s
log-mel patches with the 50 most frequent Million Song Dataset tags. This module holds the
whole model in one file:

- the log-mel front end from audio (:func:`audio_to_logmel`, :func:`logmel_to_patches`), which
  follows musicnn 0.1.0 step by step;
- the network (:class:`Musicnn`): timbral and temporal convolutions, a residual mid end, and a
  back end that pools over time and flattens max and mean *interleaved*, as the original does;
- the encoder registered as ``"musicnn"`` (:class:`MusicnnEncoder`), whose song vector is the
  200-d penultimate layer;
- :func:`convert_tf_variables`, which turned the exported TF1 checkpoint into the shipped
  ``weights/musicnn_msd.npz``.

Two things the original package gets wrong are not copied: its extractor returns patch 1's
penultimate and mid-end features for every patch (here each patch gets its own), and its
literal log line overflows in float16 under numpy >= 2 (here the product is taken in float32,
which is what numpy 1.x did).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._log import logger
from .encoders import Encoder, EncoderOutput, WindowRule, register_encoder, resolve_device
from .errors import AudioError, InputError, WeightsError

WEIGHTS_FILE = "musicnn_msd.npz"
TAGS_FILE = "musicnn_msd_tags.txt"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: the layers a song vector can come from (see MusicnnEncoder)
LAYERS = ("penultimate", "mean_pool", "max_pool")


@dataclass(frozen=True)
class MusicnnConfig:
    """Sizes of the log-mel front end and of the network (the MSD and MTT models share them)."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    n_frames: int = 187  # librosa.time_to_frames(3 s) + 1: the training patch length, ~2.99 s
    timbral_widths: tuple[int, ...] = (38, 67)  # int(0.4 * 96), int(0.7 * 96) mel bands
    timbral_length: int = 7  # frames
    timbral_filters: int = 204  # int(1.6 * 128)
    temporal_lengths: tuple[int, ...] = (128, 64, 32)  # frames
    temporal_filters: int = 51  # int(1.6 * 32)
    mid_filters: int = 64
    mid_length: int = 7
    n_units: int = 200  # the penultimate layer, the song descriptor
    n_tags: int = 50
    bn_eps: float = 1e-3  # TF1 batch_normalization's default, not PyTorch's 1e-5

    @property
    def n_frontend(self) -> int:
        """Channels out of the front end (561)."""
        return (
            len(self.timbral_widths) * self.timbral_filters
            + len(self.temporal_lengths) * self.temporal_filters
        )

    @property
    def n_midend(self) -> int:
        """Channels of the mid-end concat, front end included (753)."""
        return self.n_frontend + 3 * self.mid_filters

    @property
    def patch_samples(self) -> int:
        """Samples between patch starts (47,872 = 2.992 s at 16 kHz)."""
        return self.n_frames * self.hop_length

    @property
    def window_samples(self) -> int:
        """Samples read by a patch's 187 STFT frames (48,128): the patch plus n_fft/2 each side."""
        return (self.n_frames - 1) * self.hop_length + self.n_fft


@dataclass(frozen=True)
class WeightsInfo:
    """Where weights came from: printable source, sha256 of the file, tag names (or None)."""

    source: str
    sha256: str
    tag_names: list[str] | None


# ---------------------------------------------------------------------------------------------
# log-mel front end


def audio_to_mel16(y: np.ndarray, *, config: MusicnnConfig | None = None) -> np.ndarray:
    """Mel power spectrogram rounded through float16, as musicnn feeds it to the log.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n_samples)]
        Mono audio at 16 kHz; cast to float32 first, as ``librosa.load`` returns it.
    config : MusicnnConfig or None, optional (default=None)
        Front-end sizes; ``None`` means :class:`MusicnnConfig()`.

    Returns
    -------
    np.ndarray [shape=(..., n_frames, n_mels)], float32
        ``n_frames = 1 + n_samples // hop_length`` (centred STFT, zero padding).
    """
    # librosa's melspectrogram with the package's arguments, every other one at its default
    cfg = config or MusicnnConfig()
    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32),
        sr=cfg.sample_rate,
        hop_length=cfg.hop_length,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
    )

    # the package casts to float16 before the log; keep that rounding, then go back to float32
    return mel.astype(np.float16).astype(np.float32).swapaxes(-1, -2)


def mel16_to_logmel(mel16: np.ndarray) -> np.ndarray:
    """``log10(10000 * mel + 1)`` computed in float32, as numpy 1.x evaluated musicnn's line.

    Copying the line literally under numpy >= 2 keeps the product in float16, where it overflows
    to ``inf`` for mel > 6.55; the explicit float32 constants avoid that.
    """
    return np.log10(np.float32(10000) * mel16.astype(np.float32) + np.float32(1))


def audio_to_logmel(y: np.ndarray, *, config: MusicnnConfig | None = None) -> np.ndarray:
    """Log-compressed mel spectrogram of a whole clip, musicnn's network input before patching.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]
        Mono audio at 16 kHz.
    config : MusicnnConfig or None, optional (default=None)
        Front-end sizes; ``None`` means :class:`MusicnnConfig()`.

    Returns
    -------
    np.ndarray [shape=(n_frames, n_mels)], float32
        Values in [0, ~7]; not normalised (the network's first batch norm does that).

    Raises
    ------
    AudioError
        When ``y`` is not 1-D or holds non-finite samples.
    """
    # check the clip
    if y.ndim != 1:
        raise AudioError(f"audio_to_logmel expects mono audio, got shape={y.shape}; down-mix first")
    if not np.all(np.isfinite(y)):
        raise AudioError("audio holds NaN or inf samples; decode the file again or drop it")

    # mel, float16 rounding, log
    return mel16_to_logmel(audio_to_mel16(y, config=config))


def logmel_to_patches(logmel: np.ndarray, *, config: MusicnnConfig | None = None) -> np.ndarray:
    """Consecutive, non-overlapping 187-frame patches of a log-mel; the remainder is dropped.

    Parameters
    ----------
    logmel : np.ndarray [shape=(n_frames, n_mels)]
    config : MusicnnConfig or None, optional (default=None)

    Returns
    -------
    np.ndarray [shape=(n_patches, 187, n_mels)]
        Patch ``i`` is ``logmel[187 * i : 187 * i + 187]``.

    Raises
    ------
    AudioError
        When the log-mel has fewer than 187 frames (a clip shorter than 2.976 s).
    """
    cfg = config or MusicnnConfig()
    n_patches = logmel.shape[0] // cfg.n_frames
    if n_patches == 0:
        raise AudioError(
            f"clip too short: n_frames={logmel.shape[0]}, musicnn needs at least {cfg.n_frames} "
            f"frames ({(cfg.n_frames - 1) * cfg.hop_length / cfg.sample_rate:g} s of audio)"
        )
    usable = logmel[: n_patches * cfg.n_frames]
    return usable.reshape(n_patches, cfg.n_frames, logmel.shape[1])  # (P, 187, 96)


# ---------------------------------------------------------------------------------------------
# network


class _ConvBN(nn.Module):
    """Convolution + bias, then ReLU, then batch norm: musicnn's order (BN after the activation)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class FrontEnd(nn.Module):
    """Input batch norm, timbral (7 x mel-band) and temporal (n x 1) convolutions, max over mel."""

    def __init__(self, cfg: MusicnnConfig) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=cfg.bn_eps)
        self.timbral = nn.ModuleList(
            _ConvBN(
                nn.Conv2d(1, cfg.timbral_filters, (cfg.timbral_length, width)),
                nn.BatchNorm2d(cfg.timbral_filters, eps=cfg.bn_eps),
            )
            for width in cfg.timbral_widths
        )
        self.temporal = nn.ModuleList(
            _ConvBN(
                nn.Conv2d(1, cfg.temporal_filters, (length, 1)),
                nn.BatchNorm2d(cfg.temporal_filters, eps=cfg.bn_eps),
            )
            for length in cfg.temporal_lengths
        )
        self.timbral_pad = cfg.timbral_length // 2
        # TF 'same' padding for an even kernel k: (k - 1) // 2 frames before, the rest after
        self.temporal_pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in cfg.temporal_lengths]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        # one scalar batch norm over the whole log-mel; all padding below is in its output domain
        x = self.input_bn(logmel.unsqueeze(1))  # (B, 1, T, M)

        # timbral: zero-pad time 3/3, valid conv over time x mel bands, max over the mel positions
        padded = F.pad(x, (0, 0, self.timbral_pad, self.timbral_pad))
        outs = [block(padded).amax(dim=3) for block in self.timbral]  # each (B, 204, T)

        # temporal: 'same' padding in time only, max over the mel bands
        for block, (before, after) in zip(self.temporal, self.temporal_pads, strict=True):
            outs.append(block(F.pad(x, (0, 0, before, after))).amax(dim=3))  # (B, 51, T)
        return torch.cat(outs, dim=1)  # (B, 561, T)


class MidEnd(nn.Module):
    """Three 1-D convolutions over time (kernel 7); the second and third add their input back."""

    def __init__(self, cfg: MusicnnConfig) -> None:
        super().__init__()
        n_in = [cfg.n_frontend, cfg.mid_filters, cfg.mid_filters]
        self.layers = nn.ModuleList(
            _ConvBN(
                nn.Conv1d(c, cfg.mid_filters, cfg.mid_length),
                nn.BatchNorm1d(cfg.mid_filters, eps=cfg.bn_eps),
            )
            for c in n_in
        )
        self.pad = cfg.mid_length // 2

    def forward(self, frontend: torch.Tensor) -> list[torch.Tensor]:
        # cnn1 plain, cnn2 = conv(cnn1) + cnn1, cnn3 = conv(cnn2) + cnn2
        outs: list[torch.Tensor] = []
        x = frontend
        for i, layer in enumerate(self.layers):
            y = layer(F.pad(x, (self.pad, self.pad)))  # (B, 64, T)
            x = y if i == 0 else y + x
            outs.append(x)
        return outs


class BackEnd(nn.Module):
    """Max and mean over time, interleaved; batch norm, dense 200 (ReLU, BN), dense 50 logits."""

    def __init__(self, cfg: MusicnnConfig) -> None:
        super().__init__()
        self.pool_bn = nn.BatchNorm1d(2 * cfg.n_midend, eps=cfg.bn_eps)
        self.dense = nn.Linear(2 * cfg.n_midend, cfg.n_units)
        self.dense_bn = nn.BatchNorm1d(cfg.n_units, eps=cfg.bn_eps)
        self.out = nn.Linear(cfg.n_units, cfg.n_tags)

    def forward(self, midend: torch.Tensor) -> dict[str, torch.Tensor]:
        # pools over time; the original flattens a (753, 2) stack, so max_c and mean_c alternate
        max_pool = midend.amax(dim=2)  # (B, 753)
        mean_pool = midend.mean(dim=2)  # (B, 753)
        pool_flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # (B, 1506)

        # dense layers (dropout is the identity at inference)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pool_flat))))  # (B, 200)
        logits = self.out(penultimate)  # (B, 50)
        return {
            "max_pool": max_pool,
            "mean_pool": mean_pool,
            "pool_flat": pool_flat,
            "penultimate": penultimate,
            "logits": logits,
        }


class Musicnn(nn.Module):
    """musicnn's network on log-mel patches; call :meth:`eval` (or use :meth:`from_pretrained`).

    Parameters
    ----------
    config : MusicnnConfig or None, optional (default=None)
    """

    def __init__(self, config: MusicnnConfig | None = None) -> None:
        super().__init__()
        self.config = config or MusicnnConfig()
        self.frontend = FrontEnd(self.config)
        self.midend = MidEnd(self.config)
        self.backend = BackEnd(self.config)

    def stages(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate result, in PyTorch layout.

        Parameters
        ----------
        patches : torch.Tensor [shape=(batch, 187, 96)]
            Log-mel patches.

        Returns
        -------
        dict
            ``frontend`` (B, 561, T), ``cnn1``/``cnn2``/``cnn3`` (B, 64, T), ``max_pool`` and
            ``mean_pool`` (B, 753), ``pool_flat`` (B, 1506), ``penultimate`` (B, 200),
            ``logits`` and ``taggram`` (B, 50).
        """
        frontend = self.frontend(patches)
        cnn1, cnn2, cnn3 = self.midend(frontend)
        midend = torch.cat([frontend, cnn1, cnn2, cnn3], dim=1)  # (B, 753, T)
        out = {"frontend": frontend, "cnn1": cnn1, "cnn2": cnn2, "cnn3": cnn3}
        out.update(self.backend(midend))
        out["taggram"] = torch.sigmoid(out["logits"])
        return out

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate vectors (B, 200) and logits (B, 50) of log-mel patches (B, 187, 96)."""
        out = self.stages(patches)
        return out["penultimate"], out["logits"]

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> tuple[Musicnn, WeightsInfo]:
        """Build the network and load weights, by default the shipped MSD_musicnn ones.

        Parameters
        ----------
        path : str or Path or None, optional (default=None)
            A ``.npz`` of PyTorch state-dict names (as written by :func:`convert_tf_variables`)
            or of the TF variable names; ``None`` loads ``embedding/weights/musicnn_msd.npz``.

        Returns
        -------
        model : Musicnn
            In eval mode, on the CPU, float32.
        info : WeightsInfo
            The file's source, sha256 and tag names.

        Raises
        ------
        WeightsError
            When the file is missing, unreadable or does not fit the network.
        """
        # read the file
        data, sha, source = _read_weights(path)
        if path is None:
            tags: list[str] | None = shipped_tag_names()
        else:
            tags = [str(t) for t in data.pop("tags")] if "tags" in data else None
        if "conv2d/kernel" in data:
            data = tf_to_state_dict(data)

        # load every tensor, checking names and shapes
        model = cls()
        expected = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
        missing = sorted(set(expected) - set(data))
        unexpected = sorted(set(data) - set(expected))
        if missing or unexpected:
            raise WeightsError(
                f"weights={source} do not fit musicnn: missing={missing[:5]}, "
                f"unexpected={unexpected[:5]}; convert TF exports with convert_tf_variables"
            )
        state: dict[str, torch.Tensor] = {}
        for name, ref in expected.items():
            if tuple(data[name].shape) != tuple(ref.shape):
                raise WeightsError(
                    f"weights={source}: {name} has shape={data[name].shape}, "
                    f"expected {tuple(ref.shape)}"
                )
            state[name] = torch.from_numpy(np.ascontiguousarray(data[name], dtype=np.float32))
        model.load_state_dict(state, strict=False)
        model.eval()

        # report the size
        n_params = sum(p.numel() for p in model.parameters())
        n_stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
        logger.info(
            "musicnn: loaded %s (%d parameters + %d batch-norm statistics, sha256 %s)",
            source,
            n_params,
            n_stats,
            sha[:12],
        )
        if tags is not None and len(tags) != model.config.n_tags:
            raise WeightsError(
                f"weights={source} carry {len(tags)} tag names, expected {model.config.n_tags}"
            )
        return model, WeightsInfo(source=source, sha256=sha, tag_names=tags)


# ---------------------------------------------------------------------------------------------
# weights: shipped files and the TF conversion


def _read_weights(path: str | Path | None) -> tuple[dict[str, np.ndarray], str, str]:
    """Arrays, sha256 and a printable source of a weights file (``None``: the shipped one)."""
    if path is None:
        blob = resources.files(__package__).joinpath("weights", WEIGHTS_FILE).read_bytes()
        source = f"embedding/weights/{WEIGHTS_FILE}"
    else:
        p = Path(path)
        if not p.is_file():
            raise WeightsError(f"weights={str(p)!r} does not exist; pass a .npz file or None")
        blob = p.read_bytes()
        source = str(p)
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise WeightsError(f"weights={source} is not a readable .npz file ({exc})") from exc
    return data, hashlib.sha256(blob).hexdigest(), source


def shipped_tag_names() -> list[str]:
    """The 50 MSD tags in output order, spelt as the original package spells them."""
    text = resources.files(__package__).joinpath("weights", TAGS_FILE).read_text("utf-8")
    return [line for line in text.splitlines() if line]


# TF1 variable scope -> (PyTorch module, kind), in the order the original builder creates them
_TF_LAYERS: list[tuple[str, str, str]] = [
    ("batch_normalization", "frontend.input_bn", "bn"),
    ("conv2d", "frontend.timbral.0.conv", "conv2d"),
    ("batch_normalization_1", "frontend.timbral.0.bn", "bn"),
    ("conv2d_1", "frontend.timbral.1.conv", "conv2d"),
    ("batch_normalization_2", "frontend.timbral.1.bn", "bn"),
    ("conv2d_2", "frontend.temporal.0.conv", "conv2d"),
    ("batch_normalization_3", "frontend.temporal.0.bn", "bn"),
    ("conv2d_3", "frontend.temporal.1.conv", "conv2d"),
    ("batch_normalization_4", "frontend.temporal.1.bn", "bn"),
    ("conv2d_4", "frontend.temporal.2.conv", "conv2d"),
    ("batch_normalization_5", "frontend.temporal.2.bn", "bn"),
    ("conv2d_5", "midend.layers.0.conv", "conv1d"),
    ("batch_normalization_6", "midend.layers.0.bn", "bn"),
    ("conv2d_6", "midend.layers.1.conv", "conv1d"),
    ("batch_normalization_7", "midend.layers.1.bn", "bn"),
    ("conv2d_7", "midend.layers.2.conv", "conv1d"),
    ("batch_normalization_8", "midend.layers.2.bn", "bn"),
    ("batch_normalization_9", "backend.pool_bn", "bn"),
    ("dense", "backend.dense", "dense"),
    ("batch_normalization_10", "backend.dense_bn", "bn"),
    ("dense_1", "backend.out", "dense"),
]
_BN_NAMES = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def tf_to_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename and transpose musicnn's 64 TF1 variables into this module's state-dict layout.

    Parameters
    ----------
    variables : dict of str to np.ndarray
        TF variable name (``conv2d/kernel``, ``batch_normalization_3/moving_mean``, ...) to array,
        TF layouts unchanged.

    Returns
    -------
    dict of str to np.ndarray
        State-dict name to float32 array: Conv2d ``(out, in, time, mel)``, Conv1d
        ``(out, in, time)``, Linear ``(out, in)``.

    Raises
    ------
    WeightsError
        When a variable is missing or left over.
    """
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in variables:
            raise WeightsError(f"TF variable={name!r} is missing; export all 64 model variables")
        used.add(name)
        return np.asarray(variables[name], dtype=np.float32)

    # move each layer, transposing kernels from TF's (..., in, out) to PyTorch's (out, in, ...)
    for scope, module, kind in _TF_LAYERS:
        if kind == "bn":
            for tf_name, pt_name in _BN_NAMES.items():
                out[f"{module}.{pt_name}"] = take(f"{scope}/{tf_name}")
            continue
        kernel = take(f"{scope}/kernel")
        if kind == "conv2d":
            kernel = kernel.transpose(3, 2, 0, 1)  # (time, mel, in, out) -> (out, in, time, mel)
        elif kind == "conv1d":
            kernel = kernel[:, :, 0, :].transpose(2, 1, 0)  # (time, in, 1, out) -> (out, in, time)
        else:
            kernel = kernel.T  # (in, out) -> (out, in)
        out[f"{module}.weight"] = np.ascontiguousarray(kernel)
        out[f"{module}.bias"] = take(f"{scope}/bias")

    # nothing may be left over (Adam slots were never exported)
    extra = sorted(set(variables) - used)
    if extra:
        raise WeightsError(f"unexpected TF variables={extra[:5]}; export the model variables only")
    return out


def convert_tf_variables(
    npz_in: str | Path, npz_out: str | Path, *, tags: list[str] | None = None
) -> str:
    """Convert an ``.npz`` of musicnn's TF1 variables to the file :class:`Musicnn` loads.

    This is how ``embedding/weights/musicnn_msd.npz`` was made from ``msd_musicnn.npz``.

    Parameters
    ----------
    npz_in : str or Path
        TF variable names to arrays (as exported from the musicnn 0.1.0 checkpoint).
    npz_out : str or Path
        Where to write the state-dict ``.npz`` (uncompressed float32).
    tags : list of str or None, optional (default=None)
        Tag names to store under the key ``tags``, for weights other than the shipped MSD ones
        (e.g. MTT_musicnn); the shipped file keeps its tags in ``musicnn_msd_tags.txt``.

    Returns
    -------
    str
        sha256 of the written file.

    Raises
    ------
    WeightsError
        When the input does not hold exactly musicnn's variables.
    """
    # convert and check that the network accepts the result
    with np.load(npz_in, allow_pickle=False) as npz:
        state = tf_to_state_dict({k: npz[k] for k in npz.files})
    Musicnn().load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)

    # write, with the tags if given
    arrays: dict[str, np.ndarray] = dict(state)
    if tags is not None:
        arrays["tags"] = np.array(tags)
    np.savez(npz_out, **arrays)  # type: ignore[arg-type]
    return hashlib.sha256(Path(npz_out).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# encoder


def format_tags(taggram: np.ndarray, tag_names: list[str], *, top: int = 3) -> str:
    """The ``top`` tags of a taggram as ``"rock 0.81, guitar 0.64, indie 0.40"``.

    Parameters
    ----------
    taggram : np.ndarray [shape=(n_tags,) or (n_windows, n_tags)]
        Probabilities; several rows are averaged first.
    tag_names : list of str
    top : int, optional (default=3)

    Returns
    -------
    str

    Raises
    ------
    InputError
        When the taggram's width differs from the number of names.
    """
    probs = np.asarray(taggram, dtype=np.float64)
    probs = probs.mean(axis=0) if probs.ndim == 2 else probs
    if probs.shape != (len(tag_names),):
        raise InputError(
            f"taggram shape={np.shape(taggram)} does not fit {len(tag_names)} tag names"
        )
    order = np.argsort(-probs, kind="stable")[:top]
    return ", ".join(f"{tag_names[i]} {probs[i]:.2f}" for i in order)


class MusicnnEncoder(Encoder):
    """musicnn as an Encore encoder: one vector and 50 tag probabilities per 3 s patch.

    The vector comes from one of :data:`LAYERS`. By default it is the penultimate layer (dense
    200, ReLU, batch norm): the representation the model builds to predict its tags, compact and
    already normalised. ``mean_pool`` (or ``max_pool``) is the mid end's 753 channels averaged
    (or maxed) over the patch's frames, before the dense layers: larger and unnormalised, but it
    keeps more of the sound than the tags need (tempo, rhythm, timbre), which is what a
    listener's taste follows. The song vector is the mean over patches.

    Windowing agrees with musicnn's own patching: the package computes the log-mel of the
    *whole* clip (centred STFT, 256 zeros each side) and cuts consecutive 187-frame patches,
    dropping the remainder. A patch's first frame reads 256 samples before the patch starts, so
    :meth:`split` returns each patch with that context: window ``i`` is
    ``pad(y, 256)[47872 * i : 47872 * i + 48128]`` and :meth:`forward` takes its uncentred
    STFT, which yields exactly the whole-clip frames ``187 i .. 187 i + 186``. A clip gives
    ``(1 + n_samples // 256) // 187`` patches, as in the package, so the minimum is 2.976 s and a
    trailing remainder shorter than a patch is dropped. :meth:`embed_clip` takes the package's
    route (whole-clip log-mel, then patches); the two agree up to float rounding in the STFT and
    mel product, which can flip a float16 rounding of a rare bin (log-mel differences up to
    ~2.5e-4, penultimate differences ~1e-5).

    :meth:`forward` also takes plain windows of 2.976 to 2.992 s (``split_windows`` with
    :attr:`window`), treating each as a clip of its own, with zeros before its first frame.
    """

    name = "musicnn"

    def __init__(
        self,
        model: Musicnn,
        *,
        weights: WeightsInfo,
        device: torch.device,
        dtype: str,
        layer: str = "penultimate",
    ) -> None:
        self.cfg = model.config
        self.layer = _check_layer(layer)
        self.sample_rate = self.cfg.sample_rate
        self.dim = self.cfg.n_units if self.layer == "penultimate" else self.cfg.n_midend
        self.window = WindowRule(
            window_seconds=self.cfg.patch_samples / self.cfg.sample_rate,
            min_seconds=(self.cfg.n_frames - 1) * self.cfg.hop_length / self.cfg.sample_rate,
        )
        self.tag_names = weights.tag_names
        self.weights = weights
        self.device = device
        self.dtype = dtype
        self.model = model.to(device=device, dtype=_DTYPES[dtype])

    def config(self) -> dict[str, Any]:
        """Weights, layer, dtype and the front-end recipe: everything that changes the vectors."""
        c = self.cfg
        return {
            "weights": self.weights.source,
            "weights_sha256": self.weights.sha256,
            "layer": self.layer,
            "dtype": self.dtype,
            "frontend": (
                f"log10(1 + 10000 * float16(librosa mel sr={c.sample_rate} n_fft={c.n_fft} "
                f"hop_length={c.hop_length} n_mels={c.n_mels})), patches of {c.n_frames} frames"
            ),
            "patching": "whole-clip centred STFT frames, consecutive patches, remainder dropped",
        }

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        """Cut a mono clip into musicnn's patches, each with the 256 samples of STFT context.

        Parameters
        ----------
        y : np.ndarray [shape=(n_samples,)]
            Mono audio at 16 kHz.

        Returns
        -------
        list of np.ndarray [shape=(48128,)]
            One window per patch; see the class docstring.

        Raises
        ------
        AudioError
            When the clip is not mono or lasts less than 2.976 s.
        """
        # as many patches as the whole-clip log-mel holds
        c = self.cfg
        if y.ndim != 1:
            raise InputError(f"musicnn expects mono audio, got shape={y.shape}; down-mix first")
        n_patches = (1 + len(y) // c.hop_length) // c.n_frames
        if n_patches == 0:
            raise AudioError(
                f"clip too short: duration={len(y) / c.sample_rate:.3f}s, musicnn needs at least "
                f"{self.window.min_seconds:g}s"
            )

        # the centred STFT's zero padding, then one window per patch
        padded = np.pad(np.asarray(y, dtype=np.float32), c.n_fft // 2)
        return [
            padded[i * c.patch_samples : i * c.patch_samples + c.window_samples]
            for i in range(n_patches)
        ]

    def windows_to_patches(self, windows: np.ndarray) -> np.ndarray:
        """Log-mel patches (B, 187, 96) of windows from :meth:`split` or of plain 3 s windows."""
        c = self.cfg
        n = windows.shape[-1]
        if n == c.window_samples:
            # a split window: its uncentred frames are the whole clip's frames
            mel16 = librosa.feature.melspectrogram(
                y=windows.astype(np.float32),
                sr=c.sample_rate,
                hop_length=c.hop_length,
                n_fft=c.n_fft,
                n_mels=c.n_mels,
                center=False,
            )
            mel16 = mel16.astype(np.float16).astype(np.float32).swapaxes(-1, -2)
        elif (c.n_frames - 1) * c.hop_length <= n <= c.patch_samples:
            # a window treated as a clip of its own: centred, first 187 frames
            mel16 = audio_to_mel16(windows, config=c)[:, : c.n_frames]
        else:
            raise InputError(
                f"musicnn windows must have {c.window_samples} samples (from split) or "
                f"{(c.n_frames - 1) * c.hop_length}..{c.patch_samples}, got n_samples={n}"
            )
        return mel16_to_logmel(mel16)  # (B, 187, 96)

    @torch.inference_mode()
    def forward_patches(self, patches: np.ndarray, *, batch_size: int = 32) -> EncoderOutput:
        """Run the network on log-mel patches.

        Parameters
        ----------
        patches : np.ndarray [shape=(n_patches, 187, 96)]
        batch_size : int, optional (default=32)

        Returns
        -------
        EncoderOutput
            Vectors of the encoder's layer (n_patches, dim) and taggram (n_patches, 50), float32.
        """
        vectors, tags = [], []
        for start in range(0, len(patches), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(patches[start : start + batch_size]))
            x = x.to(device=self.device, dtype=_DTYPES[self.dtype])
            out = self.model.stages(x)
            vectors.append(out[self.layer].float().cpu().numpy())
            tags.append(torch.sigmoid(out["logits"].float()).cpu().numpy())
        return EncoderOutput(
            vectors=np.concatenate(vectors),
            tags=np.concatenate(tags) if self.tag_names is not None else None,
        )

    def forward(self, windows: torch.Tensor) -> EncoderOutput:
        """Vectors and taggram of a batch of windows (see the class docstring).

        Parameters
        ----------
        windows : torch.Tensor [shape=(batch, n_samples)]
            Windows from :meth:`split` (48,128 samples) or plain windows of 47,616 to 47,872.

        Returns
        -------
        EncoderOutput
            ``vectors`` (batch, dim), ``tags`` (batch, 50) or ``None`` without tag names.

        Raises
        ------
        InputError
            When the window length is neither of the above.
        """
        patches = self.windows_to_patches(windows.detach().cpu().numpy())
        return self.forward_patches(patches)

    def embed_clip(self, y: np.ndarray) -> EncoderOutput:
        """Per-patch vectors and taggram the package's way: whole-clip log-mel, then patches.

        Parameters
        ----------
        y : np.ndarray [shape=(n_samples,)]
            Mono audio at 16 kHz.

        Returns
        -------
        EncoderOutput
            One row per patch, ``(1 + n_samples // 256) // 187`` rows.

        Raises
        ------
        AudioError
            When the clip is not mono, not finite or shorter than 2.976 s.
        """
        patches = logmel_to_patches(audio_to_logmel(y, config=self.cfg), config=self.cfg)
        return self.forward_patches(patches)

    @torch.inference_mode()
    def tags_for(self, x: np.ndarray, *, top: int = 3) -> str:
        """The ``top`` tags of a taggram (…, 50) or of penultimate vectors (…, 200).

        Vectors go through the output layer: for a song vector (the mean of patch vectors) this
        gives sigmoid of the mean logits, close to, but not the same as, the mean taggram.

        Parameters
        ----------
        x : np.ndarray [shape=(n_tags,), (dim,), (n, n_tags) or (n, dim)]
        top : int, optional (default=3)

        Returns
        -------
        str
            Like ``"electronic 0.71, electro 0.42, dance 0.38"``.

        Raises
        ------
        InputError
            When the encoder has no tag names or ``x`` has neither width (a vector of a pooled
            layer has no output layer to go through).
        """
        if self.tag_names is None:
            raise InputError("these musicnn weights carry no tag names; pass weights with tags")
        arr = np.asarray(x, dtype=np.float32)
        if arr.shape[-1] == self.cfg.n_units and self.layer == "penultimate":
            rows = torch.from_numpy(np.atleast_2d(arr)).to(self.device, _DTYPES[self.dtype])
            arr = torch.sigmoid(self.model.backend.out(rows).float()).cpu().numpy()
        return format_tags(arr, self.tag_names, top=top)


@register_encoder("musicnn")
def build_musicnn(
    *,
    device: str = "auto",
    dtype: str = "float32",
    weights: str | Path | None = None,
    stats: str | Path | None = None,
    layer: str = "penultimate",
) -> MusicnnEncoder:
    """Build the musicnn encoder, by default with the shipped MSD_musicnn weights.

    Parameters
    ----------
    device : str, optional (default="auto")
        ``"auto"``, ``"cpu"`` or ``"cuda"``. The log-mel is always computed on the CPU.
    dtype : str, optional (default="float32")
        ``"float32"``, ``"float16"`` or ``"bfloat16"`` for the network; outputs are float32.
    weights : str or Path or None, optional (default=None)
        ``None`` loads ``embedding/weights/musicnn_msd.npz`` with the 50 MSD tags; a path loads
        that ``.npz`` (state-dict or TF names) with the tags stored in it, if any.
    stats : None, optional (default=None)
        Accepted for the common encoder options; musicnn normalises inside the network.
    layer : str, optional (default="penultimate")
        Where the vectors come from: ``"penultimate"`` (200-d), ``"mean_pool"`` or
        ``"max_pool"`` (753-d); see :class:`MusicnnEncoder`.

    Returns
    -------
    MusicnnEncoder

    Raises
    ------
    InputError
        For an unknown dtype or layer, or a ``stats`` file.
    WeightsError
        When the weights do not load.

    Examples
    --------
    >>> from embedding.encoders import embed_song, get_encoder
    >>> enc = get_encoder("musicnn", device="cpu")
    >>> vector, tags = embed_song(enc, y)  # y: mono float32 at 16 kHz, >= 2.976 s
    >>> enc.tags_for(tags)  # doctest: +SKIP
    'electronic 0.71, electro 0.42, dance 0.38'
    """
    # check the options
    _check_layer(layer)
    if dtype not in _DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of {', '.join(_DTYPES)}")
    if stats is not None:
        raise InputError(
            f"stats={str(stats)!r} given, but musicnn takes no normalisation statistics "
            "(its first batch norm normalises the log-mel); drop the option"
        )
    torch_device = resolve_device(device)

    # network, tags, encoder
    model, info = Musicnn.from_pretrained(weights)
    return MusicnnEncoder(model, weights=info, device=torch_device, dtype=dtype, layer=layer)


def _check_layer(layer: object) -> str:
    """``layer`` if it names one of :data:`LAYERS`, else an InputError saying which do."""
    if layer not in LAYERS:
        raise InputError(f"layer={layer!r} is not a musicnn layer; use one of {', '.join(LAYERS)}")
    return str(layer)


__all__ = [
    "BackEnd",
    "FrontEnd",
    "LAYERS",
    "MidEnd",
    "Musicnn",
    "MusicnnConfig",
    "MusicnnEncoder",
    "audio_to_logmel",
    "audio_to_mel16",
    "build_musicnn",
    "convert_tf_variables",
    "format_tags",
    "logmel_to_patches",
    "mel16_to_logmel",
    "shipped_tag_names",
    "tf_to_state_dict",
    "WeightsInfo",
]
