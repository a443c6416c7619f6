"""MusicFM (25 Hz conformer, Won et al. 2023) in plain PyTorch, and its :class:`Encoder`.

The module reproduces the upstream ``MusicFM25Hz`` forward pass op for op (the "reference" path)
and offers a faster path with the same maths rearranged (the default):

- front end: STFT (periodic Hann, centred, reflect padding), power, HTK mel filterbank
  (0-12 kHz, no area norm), dB, last frame dropped, scalar mean/std normalisation;
- stem: two residual 3x3 conv blocks, each halving time and frequency, then a linear map of
  each time step's (channel, band) image to ``encoder_dim``;
- encoder: macaron conformer blocks with rotary positions applied to the block input before the
  q/k projections, then one LayerNorm after the last block.

``hidden_states[i]`` follows upstream's indexing: 0 is the stem output, ``i`` the output of
block ``i``, and ``L`` (the last) is the encoder LayerNorm of block ``L``'s output. Frozen
features come from layer 7, as the authors recommend.

The fast path folds every eval-mode BatchNorm into the conv before it, runs the stem's
activations in place, computes the stem's wide stride-1 3x3 convs (float32 on the CPU) as
Winograd F(4x4, 3x3) convolutions with 4x fewer multiplications (:func:`winograd_conv3x3`),
runs the two stride-2 convs of the second stem block as one, fuses the q/k projections into one
matmul, writes the pointwise convs as matmuls and uses
:func:`torch.nn.functional.scaled_dot_product_attention`. It agrees with the reference path to
about 1e-5 (see ``scripts/bench_embed.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._log import logger
from .encoders import Encoder, EncoderOutput, WindowRule, register_encoder, resolve_device
from .errors import InputError, WeightsError

HUB_REPO = "minzwon/MusicFM"
HUB_WEIGHTS = "pretrained_msd.pt"
HUB_STATS = "msd_stats.json"
STATS_KEYS = ("melspec_2048_mean", "melspec_2048_std")
DEFAULT_LAYER = 7
MIN_SECONDS = 1.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_GET_WEIGHTS = (
    f"download them with `huggingface-cli download {HUB_REPO} {HUB_WEIGHTS} {HUB_STATS}` (they "
    "go to the Hugging Face cache, where they are found next time), or pass local files with "
    "--weights/--stats; `--encoder musicnn` works offline with the weights shipped in the package"
)


@dataclass(frozen=True)
class MusicFMConfig:
    """Sizes of a MusicFM model; the defaults are the released MSD/FMA models.

    :meth:`MusicFM.from_pretrained` reads every size from the checkpoint's tensor shapes, so the
    defaults matter only for models built from scratch (tests, benchmarks).
    """

    conv_dim: int = 512  # channels of the conv stem
    encoder_dim: int = 1024
    encoder_depth: int = 12
    n_heads: int = 16  # not in any shape; from_pretrained uses encoder_dim // (2 * len(inv_freq))
    ffn_dim: int = 4096
    codebook_size: int = 4096  # pretraining head only; sizes the unused entries of the file
    sample_rate: int = 24000
    n_fft: int = 2048
    hop_length: int = 240  # 100 frames/s; the stem's two stride-2 convs then give 25 tokens/s
    n_mels: int = 128
    f_max: float = 12000.0  # the Nyquist frequency at 24 kHz
    kernel_size: int = 31  # depthwise conv of the conformer conv module, zero padding 15
    eps: float = 1e-5  # every LayerNorm and BatchNorm
    rotary_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        """Width of one attention head; rotary positions rotate pairs within it."""
        return self.encoder_dim // self.n_heads


# ---------------------------------------------------------------------------------------------
# front end


def mel_filterbank(
    n_freqs: int, n_mels: int, *, sr: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, without area normalisation.

    Parameters
    ----------
    n_freqs : int
        STFT bins from 0 Hz to ``sr / 2`` (``n_fft // 2 + 1``).
    n_mels : int
        Number of filters.
    sr : int
        Sample rate in Hz.
    f_min : float, optional (default=0.0)
        Lowest filter edge in Hz.
    f_max : float or None, optional (default=None)
        Highest filter edge in Hz; None means ``sr / 2``.

    Returns
    -------
    torch.Tensor [shape=(n_freqs, n_mels)], float32
        Weight of each STFT bin in each filter; each filter peaks at 1.
    """
    # filter corners equally spaced in HTK mel, mapped back to Hz
    f_max = sr / 2 if f_max is None else f_max
    bin_freqs = torch.linspace(0, sr // 2, n_freqs)
    mel_lo = 2595.0 * math.log10(1.0 + f_min / 700.0)
    mel_hi = 2595.0 * math.log10(1.0 + f_max / 700.0)
    corners = 700.0 * (10.0 ** (torch.linspace(mel_lo, mel_hi, n_mels + 2) / 2595.0) - 1.0)

    # each filter rises from corner m to m+1 and falls to m+2
    widths = corners[1:] - corners[:-1]  # (n_mels + 1,)
    offsets = corners.unsqueeze(0) - bin_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = (-1.0 * offsets[:, :-2]) / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class MelFrontEnd(nn.Module):
    """Waveform to normalised log-mel spectrogram, exactly as the model was trained on."""

    def __init__(self, cfg: MusicFMConfig, *, mean: float, std: float) -> None:
        super().__init__()
        self.cfg = cfg
        self.mean = mean
        self.std = std
        self.register_buffer("window", torch.empty(0), persistent=False)
        self.register_buffer("fb", torch.empty(0), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the window and filterbank on the CPU, e.g. after a build on ``meta``."""
        cfg = self.cfg
        self.window = torch.hann_window(cfg.n_fft, device="cpu")  # periodic
        self.fb = mel_filterbank(
            cfg.n_fft // 2 + 1, cfg.n_mels, sr=cfg.sample_rate, f_max=cfg.f_max
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) float32 -> (B, n_mels, n_samples // hop_length)."""
        # power spectrogram
        cfg = self.cfg
        spec = torch.stft(
            y,
            cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.n_fft,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (B, n_fft // 2 + 1, n_frames + 1)
        power = spec.abs().pow(2.0)

        # mel, dB without top_db, last frame dropped, scalar normalisation
        mel = torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)  # (B, M, T + 1)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        db = db[..., :-1]
        return (db - self.mean) / self.std


# ---------------------------------------------------------------------------------------------
# conv stem


def _fold_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight and bias with an eval-mode BatchNorm that follows the conv folded in."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    base = torch.zeros_like(bn.running_mean) if bias is None else bias
    return weight * scale.reshape(shape), (base - bn.running_mean) * scale + bn.bias


class PackedLinear:
    """``y = x W^T + b`` for the fast path, run by oneDNN with a prepacked weight on the CPU.

    On this CPU family oneDNN's matmul runs about 1.5-2x faster than the default BLAS one in
    float32; elsewhere (GPU, other dtypes, no oneDNN) this is plain :func:`F.linear`.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, *, key: tuple[Any, ...] = ()
    ) -> None:
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()
        self.key = key
        self.packed = (
            weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
        )
        if self.packed:
            self.weight = self.weight.to_mkldnn()
            self.bias = None if self.bias is None else self.bias.to_mkldnn()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        if not self.packed:
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, x.shape[-1]).to_mkldnn()  # (N, in)
        y = torch._C._nn.mkldnn_linear(rows, self.weight, self.bias).to_dense()  # (N, out)
        return y.view(*x.shape[:-1], y.shape[-1])


def _packed(
    cache: dict[str, PackedLinear], name: str, weight: torch.Tensor, bias: torch.Tensor | None
) -> PackedLinear:
    """The cached :class:`PackedLinear` ``name``, rebuilt when ``weight`` moved or changed."""
    if name not in cache or cache[name].key != _tensor_key(weight):
        with torch.no_grad():
            cache[name] = PackedLinear(weight, bias, key=_tensor_key(weight))
    return cache[name]


def _tensor_key(t: torch.Tensor) -> tuple[Any, ...]:
    """What invalidates a fast-path cache built from ``t``: a move, a new tensor, an update."""
    version = -1 if t.is_inference() else t._version
    return t.device, t.dtype, t.data_ptr(), version


# Winograd F(m x m, 3x3), as (B^T, G, A^T) for output tiles of m = 2 and 4: an (m + 2)-square
# input tile d and a 3x3 kernel g give the m x m output tile A^T [(G g G^T) * (B^T d B)] A, with
# (m + 2)^2 multiplications where the direct sum takes 9 m^2
_WINOGRAD: dict[int, tuple[Any, Any, Any]] = {
    2: (
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: (
        (
            (4, 0, -5, 0, 1, 0),
            (0, -4, -4, 1, 1, 0),
            (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0),
            (0, 2, -1, -2, 1, 0),
            (0, 4, 0, -5, 0, 1),
        ),
        (
            (1 / 4, 0, 0),
            (-1 / 6, -1 / 6, -1 / 6),
            (-1 / 6, 1 / 6, -1 / 6),
            (1 / 24, 1 / 12, 1 / 6),
            (1 / 24, -1 / 12, 1 / 6),
            (0, 0, 1),
        ),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}
WINOGRAD_TILE = 4  # output tile of the fast stem's stride-1 convs: 4x fewer multiplications
WINOGRAD_MIN_CHANNELS = 128  # measured: F.conv2d is faster at 64 channels, slower at 128
WINOGRAD_CHUNK_TILES = 384  # tiles per chunk: the chunk's transformed copies stay in the caches


def winograd_weights(weight: torch.Tensor, *, m: int = WINOGRAD_TILE) -> torch.Tensor:
    """3x3 conv kernels in the Winograd F(m x m, 3x3) domain, ``G g G^T`` per kernel.

    Parameters
    ----------
    weight : torch.Tensor [shape=(C_out, C_in, 3, 3)]
        The kernels of a stride-1 3x3 convolution.
    m : int, optional (default=4)
        Output tile size, 2 or 4: 2.25x or 4x fewer multiplications than the direct sum; 4 has
        the larger rounding error (about 1e-5 of the output scale in float32, against 1e-6).

    Returns
    -------
    torch.Tensor [shape=((m + 2)^2, C_out, C_in)], ``weight``'s dtype and device
        Entry ``(m + 2) * a + b`` holds element ``(a, b)`` of every transformed kernel; computed
        in float64 so that the only rounding is the final cast.
    """
    g = torch.tensor(_WINOGRAD[m][1], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ay,oiyx,bx->aboi", g, weight.double(), g)  # (t, t, C_out, C_in)
    return u.reshape(-1, *weight.shape[:2]).to(weight.dtype).contiguous()


def _tile_transform(rows: Any, like: torch.Tensor) -> torch.Tensor:
    """``M X M^T`` of square tiles X flattened row-major, as one matrix on the flattened tiles."""
    mat = torch.tensor(rows, dtype=like.dtype, device=like.device)
    return torch.einsum("ay,bx->abyx", mat, mat).reshape(mat.shape[0] ** 2, mat.shape[1] ** 2)


def winograd_conv3x3(
    x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` computed with Winograd's minimal filtering.

    The padded image is cut into overlapping (m + 2)-square tiles with stride m. Each tile is
    transformed (``B^T d B``), multiplied with the transformed kernels as ``(m + 2)^2`` matrix
    products over the channels, and transformed back (``A^T m A``) into an m x m output tile. The
    work goes a chunk of tile rows at a time so that the transformed copies stay in cache.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, C_in, H, W)]
        Any H and W; sides that are not a multiple of m are padded, and the output cropped.
    u : torch.Tensor [shape=((m + 2)^2, C_out, C_in)]
        The kernels as returned by :func:`winograd_weights`; m is read from the first axis.
    bias : torch.Tensor [shape=(C_out,)] or None, optional (default=None)

    Returns
    -------
    torch.Tensor [shape=(B, C_out, H, W)]
        Equal to the direct convolution up to rounding (see :func:`winograd_weights`).
    """
    # zero padding of 1, plus what makes whole tiles on the bottom and right
    B, C, H, W = x.shape
    t = math.isqrt(u.shape[0])  # input tile side
    m = t - 2  # output tile side
    th, tw = -(-H // m), -(-W // m)  # output tiles along each axis
    xp = F.pad(x, (1, m * tw + 1 - W, 1, m * th + 1 - H))  # (B, C, m th + 2, m tw + 2)
    out = x.new_empty(B, u.shape[1], th, m, tw, m)  # output tile (i, j) at [:, :, i, :, j, :]

    # both tile transforms as matrices on flattened tiles, the bias broadcast over the tiles
    b_t, _, a_t = _WINOGRAD[m]
    to_tiles = _tile_transform(b_t, x)  # (t^2, t^2)
    from_tiles = _tile_transform(a_t, x)  # (m^2, t^2)
    bias = x.new_zeros(u.shape[1]) if bias is None else bias
    bias = bias.view(-1, 1, 1, 1, 1)
    rows = max(1, WINOGRAD_CHUNK_TILES // tw)

    for b in range(B):
        for i0 in range(0, th, rows):
            # the chunk's tiles, element-major, and B^T d B of each
            n = min(rows, th - i0)
            chunk = xp[b, :, m * i0 : m * (i0 + n) + 2]  # (C, m n + 2, m tw + 2)
            tiles = chunk.unfold(1, t, m).unfold(2, t, m)  # (C, n, tw, t, t), a view
            tiles = tiles.permute(3, 4, 0, 1, 2).reshape(t * t, -1)  # (t^2, C n tw)
            v = torch.mm(to_tiles, tiles).view(t * t, C, n * tw)

            # one product over channels per tile element, then A^T m A plus the bias
            prod = torch.bmm(u, v)  # (t^2, C_out, n tw)
            y = torch.mm(from_tiles, prod.view(t * t, -1)).view(m, m, -1, n, tw)
            torch.add(y.permute(2, 3, 0, 4, 1), bias, out=out[b, :, i0 : i0 + n])
    return out.view(B, -1, m * th, m * tw)[:, :, :H, :W]


def _use_winograd(x: torch.Tensor) -> bool:
    """Whether :func:`winograd_conv3x3` beats ``F.conv2d`` on ``x``, as measured on the CPU."""
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[1] >= WINOGRAD_MIN_CHANNELS
    )


class ResBlock2d(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + bn3(conv3(x))), halving both image axes."""

    def __init__(self, c_in: int, c_out: int, *, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out, eps=eps)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out, eps=eps)
        self.conv3 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(c_out, eps=eps)
        self._fast: dict[str, Any] = {}

    def forward(self, x: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        """(B, C_in, F, T) -> (B, C_out, ceil(F / 2), ceil(T / 2))."""
        if fast:
            return self._forward_fast(x)
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.bn3(self.conv3(x)) + out)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm-folded weights, rebuilt when the module moved or changed; the layout stays
        # NCHW: measured on 2 cores, channels-last made the stride-2 convolutions ~40 % slower
        p = self._fast
        if p.get("key") != _tensor_key(self.conv2.weight):
            with torch.no_grad():
                for name in ("1", "2", "3"):
                    conv, bn = getattr(self, "conv" + name), getattr(self, "bn" + name)
                    p["w" + name], p["b" + name] = _fold_bn(conv.weight, conv.bias, bn)
                p["u2"] = winograd_weights(p["w2"], m=WINOGRAD_TILE)
                p["w13"], p["b13"] = torch.cat((p["w1"], p["w3"])), torch.cat((p["b1"], p["b3"]))
            p["key"] = _tensor_key(self.conv2.weight)

        # the stride-2 convs of x: for a wide x one conv with both kernels (~5 % faster, it reads
        # x once); the one-channel mel image gains nothing and its shortcut would wait in memory
        shortcut = None
        if x.shape[1] > 1:
            both = F.conv2d(x, p["w13"], p["b13"], stride=2, padding=1)  # (B, 2 C_out, F', T')
            out, shortcut = both.chunk(2, dim=1)
        else:
            out = F.conv2d(x, p["w1"], p["b1"], stride=2, padding=1)

        # main path and shortcut, with the BatchNorms folded away and in-place activations; the
        # stride-1 conv as a Winograd conv where that is faster (float32 on the CPU, wide input)
        out = F.relu_(out)
        if _use_winograd(out):
            out = winograd_conv3x3(out, p["u2"], p["b2"])
        else:
            out = F.conv2d(out, p["w2"], p["b2"], padding=1)
        if shortcut is None:
            shortcut = F.conv2d(x, p["w3"], p["b3"], stride=2, padding=1)
        out += shortcut
        return F.relu_(out)


class ConvStem(nn.Module):
    """Normalised mel (B, n_mels, T) to tokens (B, ceil(ceil(T / 2) / 2), encoder_dim)."""

    def __init__(self, cfg: MusicFMConfig) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            [
                ResBlock2d(1, cfg.conv_dim, eps=cfg.eps),
                ResBlock2d(cfg.conv_dim, cfg.conv_dim, eps=cfg.eps),
            ]
        )
        self.linear = nn.Linear(cfg.conv_dim * cfg.n_mels // 4, cfg.encoder_dim)
        self._fast: dict[str, PackedLinear] = {}

    def forward(self, mel: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        """See the class summary."""
        x = mel.unsqueeze(1)  # (B, 1, F, T): frequency as height, time as width
        for block in self.conv:
            x = block(x, fast=fast)  # (B, C, F', T')
        B, C, Fq, T = x.shape
        x = x.permute(0, 3, 1, 2).reshape(B, T, C * Fq)  # (B, T, C * F): channel-major
        if not fast:
            return self.linear(x)
        return _packed(self._fast, "linear", self.linear.weight, self.linear.bias)(x)


# ---------------------------------------------------------------------------------------------
# conformer


class Rotary(nn.Module):
    """Rotary position angles; ``inv_freq`` is read from the checkpoint like every weight."""

    def __init__(self, head_dim: int, *, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, n_tokens: int, *, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the angles, each (T, 1, head_dim) to broadcast over (B, T, H, hd)."""
        inv_freq: torch.Tensor = self.inv_freq  # type: ignore[assignment]
        positions = torch.arange(n_tokens, device=inv_freq.device).type_as(inv_freq)
        angles = torch.outer(positions, inv_freq)  # (T, hd / 2)
        angles = torch.cat((angles, angles), dim=-1)[:, None, :]  # (T, 1, hd)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rotate-half rotary positions applied per head to (B, T, D)."""
    B, T, D = x.shape
    h = x.view(B, T, n_heads, D // n_heads)  # (B, T, H, hd)
    half = h.shape[-1] // 2
    turned = torch.cat((-h[..., half:], h[..., :half]), dim=-1)
    return (h * cos + turned * sin).view(B, T, D)


class FeedForward(nn.Module):
    """Linear, swish, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)
        self._fast: dict[str, PackedLinear] = {}

    def forward(self, x: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        if not fast:
            return self.output_dense(F.silu(self.intermediate_dense(x)))
        up, down = self.intermediate_dense, self.output_dense
        h = _packed(self._fast, "up", up.weight, up.bias)(x)  # (B, T, hidden)
        return _packed(self._fast, "down", down.weight, down.bias)(F.silu(h))


class SelfAttention(nn.Module):
    """Multi-head attention whose q and k see the rotated input and v the plain one."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self._fast: dict[str, PackedLinear] = {}

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, fast: bool = False
    ) -> torch.Tensor:
        """(B, T, D) layer-normed block input -> (B, T, D)."""
        # rotary positions on the input of the q/k projections only
        B, T, D = x.shape
        H = self.n_heads
        rotated = _rotate(x, cos, sin, H)
        if fast:
            return self._forward_fast(x, rotated)

        # softmax(q k^T / sqrt(hd)) v per head
        q = self.linear_q(rotated).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)
        k = self.linear_k(rotated).view(B, T, H, D // H).transpose(1, 2)
        v = self.linear_v(x).view(B, T, H, D // H).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(D // H)  # (B, H, T, T)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, T, hd)
        return self.linear_out(out.transpose(1, 2).reshape(B, T, D))

    def _forward_fast(self, x: torch.Tensor, rotated: torch.Tensor) -> torch.Tensor:
        # q and k from one matmul
        q, k, v, o = self.linear_q, self.linear_k, self.linear_v, self.linear_out
        if "qk" not in self._fast or self._fast["qk"].key != _tensor_key(q.weight):
            with torch.no_grad():
                w_qk, b_qk = torch.cat((q.weight, k.weight)), torch.cat((q.bias, k.bias))
                self._fast["qk"] = PackedLinear(w_qk, b_qk, key=_tensor_key(q.weight))
        B, T, D = x.shape
        H = self.n_heads
        qk = self._fast["qk"](rotated).view(B, T, 2, H, D // H)  # (B, T, 2, H, hd)
        qk = qk.permute(2, 0, 3, 1, 4)  # (2, B, H, T, hd)
        values = _packed(self._fast, "v", v.weight, v.bias)(x)
        values = values.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, hd)

        # fused attention kernel
        out = F.scaled_dot_product_attention(qk[0], qk[1], values)  # (B, H, T, hd)
        return _packed(self._fast, "out", o.weight, o.bias)(out.transpose(1, 2).reshape(B, T, D))


class ConvModule(nn.Module):
    """LayerNorm, pointwise conv to 2D, GLU, depthwise conv, BatchNorm, swish, pointwise conv."""

    def __init__(self, dim: int, *, kernel_size: int, eps: float) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(
            dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim, bias=False
        )
        self.batch_norm = nn.BatchNorm1d(dim, eps=eps)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1, bias=False)
        self._fast: dict[str, Any] = {}

    def forward(self, x: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        if fast:
            return self._forward_fast(x)
        h = self.layer_norm(x).transpose(1, 2)  # (B, D, T)
        h = F.glu(self.pointwise_conv1(h), dim=1)
        h = F.silu(self.batch_norm(self.depthwise_conv(h)))
        return self.pointwise_conv2(h).transpose(1, 2)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        # pointwise convs as matmuls, BatchNorm folded into the depthwise conv
        p = self._fast
        if p.get("key") != _tensor_key(self.depthwise_conv.weight):
            with torch.no_grad():
                p["w_dw"], p["b_dw"] = _fold_bn(self.depthwise_conv.weight, None, self.batch_norm)
                p["key"] = _tensor_key(self.depthwise_conv.weight)
        pw1 = _packed(p, "pw1", self.pointwise_conv1.weight.squeeze(-1), None)
        pw2 = _packed(p, "pw2", self.pointwise_conv2.weight.squeeze(-1), None)

        # the depthwise conv runs on (B, D, T)
        h = F.glu(pw1(self.layer_norm(x)), dim=-1)  # (B, T, D)
        pad = self.depthwise_conv.padding
        h = F.conv1d(h.transpose(1, 2), p["w_dw"], p["b_dw"], padding=pad, groups=h.shape[-1])
        return pw2(F.silu(h).transpose(1, 2))  # (B, T, D)


class ConformerBlock(nn.Module):
    """Macaron conformer block: ½ FFN, attention, conv module, ½ FFN, LayerNorm."""

    def __init__(self, cfg: MusicFMConfig) -> None:
        super().__init__()
        D = cfg.encoder_dim
        self.ffn1_layer_norm = nn.LayerNorm(D, eps=cfg.eps)
        self.ffn1 = FeedForward(D, cfg.ffn_dim)
        self.self_attn_layer_norm = nn.LayerNorm(D, eps=cfg.eps)
        self.self_attn = SelfAttention(D, cfg.n_heads)
        self.conv_module = ConvModule(D, kernel_size=cfg.kernel_size, eps=cfg.eps)
        self.ffn2_layer_norm = nn.LayerNorm(D, eps=cfg.eps)
        self.ffn2 = FeedForward(D, cfg.ffn_dim)
        self.final_layer_norm = nn.LayerNorm(D, eps=cfg.eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, fast: bool = False
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        x = self.ffn1(self.ffn1_layer_norm(x), fast=fast) * 0.5 + x
        x = self.self_attn(self.self_attn_layer_norm(x), cos, sin, fast=fast) + x
        x = x + self.conv_module(x, fast=fast)
        x = self.ffn2(self.ffn2_layer_norm(x), fast=fast) * 0.5 + x
        return self.final_layer_norm(x)


class ConformerEncoder(nn.Module):
    """Rotary positions, the blocks, and the LayerNorm applied after the last block."""

    def __init__(self, cfg: MusicFMConfig) -> None:
        super().__init__()
        # registration order follows the checkpoint's key order
        self.embed_positions = Rotary(cfg.head_dim, base=cfg.rotary_base)
        self.layer_norm = nn.LayerNorm(cfg.encoder_dim, eps=cfg.eps)
        self.layers = nn.ModuleList([ConformerBlock(cfg) for _ in range(cfg.encoder_depth)])


# ---------------------------------------------------------------------------------------------
# the model


class MusicFM(nn.Module):
    """MusicFM 25 Hz: waveform at 24 kHz to 25 token vectors per second, per layer.

    Parameters
    ----------
    cfg : MusicFMConfig, optional (default=MusicFMConfig())
    mean, std : float, optional (default=0.0, 1.0)
        The scalar log-mel statistics of the training set (``melspec_2048_*`` in the stats file).
    layer : int or None, optional (default=None)
        The layer :meth:`hidden_states` returns when none is asked for; None means 7, or the
        last one in models with fewer blocks.
    """

    def __init__(
        self,
        cfg: MusicFMConfig | None = None,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        layer: int | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg or MusicFMConfig()
        depth = self.cfg.encoder_depth
        self.layer = min(DEFAULT_LAYER, depth) if layer is None else _check_layer(layer, depth)
        self.frontend = MelFrontEnd(self.cfg, mean=mean, std=std)
        self.conv = ConvStem(self.cfg)
        self.conformer = ConformerEncoder(self.cfg)

    @property
    def n_layers(self) -> int:
        """Number of conformer blocks, L; hidden states run from 0 to L."""
        return len(self.conformer.layers)

    def melspec(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel [shape=(B, n_mels, n_samples // hop_length)] of (B, n_samples)."""
        return self.frontend(y.float())

    def hidden_states(
        self, y: torch.Tensor, *, layer: int | None = None, fast: bool = True
    ) -> torch.Tensor:
        """One hidden state of a batch of equal-length waveforms, running only the blocks needed.

        Parameters
        ----------
        y : torch.Tensor [shape=(B, n_samples)]
            Mono audio at 24 kHz, on the model's device.
        layer : int or None, optional (default=None)
            0 = conv stem, i = block i, L = encoder LayerNorm of block L; None uses ``self.layer``.
        fast : bool, optional (default=True)
            False runs upstream's exact order of operations (bit-identical on CPU in float32).

        Returns
        -------
        torch.Tensor [shape=(B, n_tokens, encoder_dim)]
            ``n_tokens = ceil(ceil(n_samples // 240 / 2) / 2)``, 25 per second.

        Raises
        ------
        InputError
            When ``layer`` is outside 0..L or ``y`` is not 2-D.
        """
        layer = self.layer if layer is None else _check_layer(layer, self.n_layers)
        return self._encode(self.melspec(_check_wave(y)), upto=layer, fast=fast)[-1]

    def all_hidden_states(self, y: torch.Tensor, *, fast: bool = True) -> list[torch.Tensor]:
        """All L + 1 hidden states of (B, n_samples), indexed as in :meth:`hidden_states`."""
        return self._encode(self.melspec(_check_wave(y)), upto=self.n_layers, fast=fast, keep=True)

    def encode_melspec(
        self, mel: torch.Tensor, *, upto: int, fast: bool = True
    ) -> list[torch.Tensor]:
        """Hidden states 0..``upto`` of a normalised log-mel (B, n_mels, T)."""
        return self._encode(mel, upto=_check_layer(upto, self.n_layers), fast=fast, keep=True)

    def _encode(
        self, mel: torch.Tensor, *, upto: int, fast: bool, keep: bool = False
    ) -> list[torch.Tensor]:
        # conv stem in the model's dtype; the front end always runs in float32
        dtype = self.conv.linear.weight.dtype
        x = self.conv(mel.to(dtype), fast=fast)  # (B, T, D)
        states = [x]

        # only the blocks up to the asked layer; the encoder LayerNorm only after the last one
        cos, sin = self.conformer.embed_positions(x.shape[1], dtype=dtype)
        for i in range(upto):
            x = self.conformer.layers[i](x, cos, sin, fast=fast)
            if i + 1 == self.n_layers:
                x = self.conformer.layer_norm(x)
            states = states + [x] if keep else [x]
        return states

    def checkpoint_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Every entry of a checkpoint file for this model, in file order, with shape and dtype.

        The module's own tensors plus the pretraining-only ones the file also holds (cls token,
        front-end buffers, quantizer, positional conv with legacy weight-norm names, prediction
        head), with ``num_batches_tracked`` as float32 as the released files store it. Keys have
        no ``model.`` prefix.
        """
        # the pretraining-only entries, sized from the config
        cfg = self.cfg
        D = cfg.encoder_dim
        f32 = torch.float32
        head: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "cls_token": ((D,), f32),
            "preprocessor_melspec_2048.mel_stft.spectrogram.window": ((cfg.n_fft,), f32),
            "preprocessor_melspec_2048.mel_stft.mel_scale.fb": (
                (cfg.n_fft // 2 + 1, cfg.n_mels),
                f32,
            ),
            "quantizer_melspec_2048_0.random_projection": ((cfg.n_mels * 4, 16), f32),
            "quantizer_melspec_2048_0.codebook": ((cfg.codebook_size, 16), f32),
        }
        pos_conv = {
            "conformer.pos_conv_embed.conv.bias": ((D,), f32),
            "conformer.pos_conv_embed.conv.weight_g": ((1, 1, 128), f32),
            "conformer.pos_conv_embed.conv.weight_v": ((D, D // 16, 128), f32),
        }
        tail = {
            "linear.weight": ((cfg.codebook_size, D), f32),
            "linear.bias": ((cfg.codebook_size,), f32),
        }

        # the module's own entries, with the positional conv after the rotary table
        layout = dict(head)
        for key, value in self.state_dict(keep_vars=True).items():
            layout[key] = (tuple(value.shape), f32)
            if key == "conformer.embed_positions.inv_freq":
                layout.update(pos_conv)
        layout.update(tail)
        return layout

    @classmethod
    def from_pretrained(
        cls,
        weights: str | os.PathLike[str] | None = None,
        stats: str | os.PathLike[str] | None = None,
        *,
        layer: int = DEFAULT_LAYER,
        n_heads: int | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        cache_dir: str | os.PathLike[str] | None = None,
        local_dir: str | os.PathLike[str] | None = None,
    ) -> MusicFM:
        """Build the model from a released checkpoint and stats file.

        Parameters
        ----------
        weights : path or None, optional (default=None)
            A ``pretrained_*.pt`` file. None fetches ``pretrained_msd.pt`` from the Hugging Face
            hub repository ``minzwon/MusicFM`` through the hub cache (``HF_HUB_OFFLINE=1`` uses
            the cache only).
        stats : path or None, optional (default=None)
            The matching ``*_stats.json``. None fetches ``msd_stats.json`` the same way.
        layer : int, optional (default=7)
            Default layer of :meth:`hidden_states`.
        n_heads : int or None, optional (default=None)
            Attention heads. None derives them from the rotary table: the file's ``inv_freq``
            holds head_dim / 2 frequencies, so ``n_heads = encoder_dim // (2 * len(inv_freq))``
            (16 for the released models). A value given must agree with that table.
        device : str or torch.device, optional (default="cpu")
        dtype : str or torch.dtype, optional (default="float32")
            "float32", "bfloat16" or "float16" (float16 needs CUDA). The front end always runs
            in float32.
        cache_dir : path or None, optional (default=None)
            Hugging Face cache folder to use instead of the default one.
        local_dir : path or None, optional (default=None)
            Plain folder holding (or receiving) the hub files, as ``huggingface-cli download
            --local-dir`` lays them out.

        Returns
        -------
        MusicFM
            In eval mode, on ``device``.

        Raises
        ------
        WeightsError
            When a file is neither given, cached nor downloadable, cannot be read, or its keys
            or shapes do not fit a MusicFM model.
        """
        # the two files, given or from the hub
        hub_args = {"cache_dir": cache_dir, "local_dir": local_dir}
        weights_path = Path(weights) if weights else _hub_file(HUB_WEIGHTS, **hub_args)
        stats_path = Path(stats) if stats else _hub_file(HUB_STATS, **hub_args)
        mean, std = read_stats(stats_path)
        state = read_checkpoint(weights_path)

        # sizes from shapes, then the module without allocating, then the tensors assigned
        cfg = config_from_state(state, n_heads=n_heads)
        with torch.device("meta"):
            model = cls(cfg, mean=mean, std=std, layer=layer)
        model.load_state_dict(_fit_state(model, state), assign=True)
        model.frontend.reset_buffers()
        _check_frontend(model, state)
        logger.info(
            "MusicFM loaded from %s: %d blocks x %d dims, %.1fM parameters",
            weights_path,
            cfg.encoder_depth,
            cfg.encoder_dim,
            sum(p.numel() for p in model.parameters()) / 1e6,
        )

        # device and dtype
        torch_dtype = _torch_dtype(dtype)
        torch_device = torch.device(device)
        if torch_dtype == torch.float16 and torch_device.type != "cuda":
            raise InputError(
                f"dtype=float16 asked for on device={torch_device}; float16 needs CUDA, use "
                "float32 or bfloat16 on the CPU"
            )
        model.conv.to(torch_device, torch_dtype)
        model.conformer.to(torch_device, torch_dtype)
        model.conformer.embed_positions.inv_freq = state["conformer.embed_positions.inv_freq"].to(
            torch_device
        )
        model.frontend.to(torch_device)
        return model.eval()


# ---------------------------------------------------------------------------------------------
# loading


def read_stats(path: str | os.PathLike[str]) -> tuple[float, float]:
    """The scalar log-mel mean and std of a MusicFM stats JSON (other keys are ignored).

    Raises
    ------
    WeightsError
        When the file cannot be read or lacks ``melspec_2048_mean`` / ``melspec_2048_std``.
    """
    if not Path(path).is_file():
        raise WeightsError(f"MusicFM stats path={str(path)!r} does not exist; {_GET_WEIGHTS}")
    try:
        stats = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot read MusicFM stats file path={str(path)!r}: {err}") from err
    missing = [k for k in STATS_KEYS if not isinstance(stats, dict) or k not in stats]
    if missing:
        raise WeightsError(
            f"MusicFM stats file path={str(path)!r} lacks keys={missing}; expected a flat JSON "
            f"object with {', '.join(STATS_KEYS)} such as {HUB_STATS} from {HUB_REPO}"
        )
    return float(stats[STATS_KEYS[0]]), float(stats[STATS_KEYS[1]])


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a MusicFM checkpoint with the ``model.`` prefix removed.

    The file is opened with ``weights_only=True``; only its ``"state_dict"`` entry is read.

    Raises
    ------
    WeightsError
        When the file is missing, not a torch checkpoint, or has no ``state_dict``.
    """
    # the pickle, restricted to tensors and plain containers
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"MusicFM weights path={str(path)!r} does not exist; {_GET_WEIGHTS}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsError(
            f"cannot read MusicFM weights path={str(path)!r} as a torch checkpoint: {err}"
        ) from err
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise WeightsError(
            f"MusicFM weights path={str(path)!r} has no 'state_dict' entry; expected a file "
            f"laid out like {HUB_WEIGHTS}"
        )

    # keys without the Lightning-style "model." prefix
    prefix = "model."
    return {
        k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in blob["state_dict"].items()
    }


def config_from_state(
    state: dict[str, torch.Tensor], *, n_heads: int | None = None
) -> MusicFMConfig:
    """Read the model sizes from checkpoint tensor shapes (keys without ``model.``).

    Parameters
    ----------
    state : dict of str to torch.Tensor
        As returned by :func:`read_checkpoint`.
    n_heads : int or None, optional (default=None)
        None derives the head count from the rotary table (see
        :meth:`MusicFM.from_pretrained`).

    Returns
    -------
    MusicFMConfig

    Raises
    ------
    WeightsError
        When a tensor the sizes come from is missing or the sizes do not fit together.
    """
    # the sizes the shapes carry
    needed = [
        "conv.conv.0.conv1.weight",
        "conv.linear.weight",
        "conformer.embed_positions.inv_freq",
        "conformer.layers.0.ffn1.intermediate_dense.weight",
        "conformer.layers.0.conv_module.depthwise_conv.weight",
    ]
    missing = [k for k in needed if k not in state]
    if missing:
        raise WeightsError(f"not a MusicFM checkpoint: missing keys={missing}; {_GET_WEIGHTS}")
    conv_dim = state["conv.conv.0.conv1.weight"].shape[0]
    encoder_dim, stem_out = state["conv.linear.weight"].shape
    head_dim = 2 * state["conformer.embed_positions.inv_freq"].shape[0]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("conformer.layers."))
    codebook = state.get("linear.weight", torch.empty(4096, 0)).shape[0]

    # the head count, derived or checked against the rotary table
    derived = encoder_dim // head_dim if head_dim else 0
    if n_heads is not None and n_heads != derived:
        raise WeightsError(
            f"n_heads={n_heads} does not fit the checkpoint: its rotary table has head_dim="
            f"{head_dim}, so encoder_dim={encoder_dim} gives n_heads={derived}; leave n_heads unset"
        )
    if derived * head_dim != encoder_dim or stem_out * 4 != conv_dim * 128:
        raise WeightsError(
            f"inconsistent MusicFM shapes: encoder_dim={encoder_dim}, head_dim={head_dim}, "
            f"conv_dim={conv_dim}, stem linear input={stem_out} (expected conv_dim * 32)"
        )
    return replace(
        MusicFMConfig(),
        conv_dim=conv_dim,
        encoder_dim=encoder_dim,
        encoder_depth=depth,
        n_heads=derived,
        ffn_dim=state["conformer.layers.0.ffn1.intermediate_dense.weight"].shape[0],
        codebook_size=codebook,
        kernel_size=state["conformer.layers.0.conv_module.depthwise_conv.weight"].shape[-1],
    )


def _is_ignored(key: str) -> bool:
    """Entries that play no part in embeddings: pretraining parts and BatchNorm counters."""
    prefixes = ("cls_token", "quantizer_", "linear.", "conformer.pos_conv_embed.", "preprocessor_")
    return key.startswith(prefixes) or key.endswith("num_batches_tracked")


def _fit_state(model: MusicFM, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's used entries, checked strictly against the module's."""
    # the same key set, ignored entries aside
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if not _is_ignored(k)}
    used = {k: v for k, v in state.items() if not _is_ignored(k)}
    missing = sorted(set(expected) - set(used))
    unexpected = sorted(set(used) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"MusicFM checkpoint does not fit the model: missing keys={missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected keys="
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)}); "
            "expected the layout of the released pretrained_msd.pt / pretrained_fma.pt"
        )

    # the same shapes
    wrong = [
        f"{k}: {tuple(used[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if used[k].shape != v.shape
    ]
    if wrong:
        raise WeightsError(f"MusicFM checkpoint shapes do not fit the model: {wrong[:5]}")

    # float32 tensors, plus fresh BatchNorm counters (unused in eval mode)
    fitted = {k: v.float() for k, v in used.items()}
    for key in model.state_dict(keep_vars=True):
        if key.endswith("num_batches_tracked"):
            fitted[key] = torch.zeros((), dtype=torch.long)
    return fitted


def _check_frontend(model: MusicFM, state: dict[str, torch.Tensor]) -> None:
    """Compare the recomputed window and filterbank with the checkpoint's copies, then use those.

    The checkpoint's copies are what the model was trained with; the recomputed ones agree to
    float32 rounding, but the last bit of ``torch.hann_window`` varies with the CPU's vector
    kernels, so taking the stored copies keeps the front end the same on every machine.
    """
    prefix = "preprocessor_melspec_2048.mel_stft."
    stored = {
        "window": state.get(prefix + "spectrogram.window"),
        "fb": state.get(prefix + "mel_scale.fb"),
    }
    for name, value in stored.items():
        ours = getattr(model.frontend, name)
        if value is None:
            continue
        if value.shape != ours.shape or not torch.allclose(value.float(), ours, atol=1e-6):
            raise WeightsError(
                f"the checkpoint's front-end buffer {name} differs from the standard one "
                f"(shape={tuple(value.shape)}); this file was not made by MusicFM's front end"
            )
        setattr(model.frontend, name, value.float().clone())


def _hub_file(
    filename: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """A file of the MusicFM hub repository, from the cache or downloaded into it."""
    # lazy import: only the hub path needs it; offline is read when called, not at import
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        path = hf_hub_download(
            HUB_REPO,
            filename,
            cache_dir=None if cache_dir is None else Path(cache_dir),
            local_dir=None if local_dir is None else Path(local_dir),
            local_files_only=offline,
        )
    except (OSError, EntryNotFoundError, ValueError) as err:
        where = "offline (HF_HUB_OFFLINE is set)" if offline else "the hub is unreachable"
        raise WeightsError(
            f"MusicFM file={filename!r} is not in the Hugging Face cache and {where}; "
            f"{_GET_WEIGHTS}"
        ) from err
    return Path(str(path))


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file; cached per (path, size, mtime) for the process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of ``path``, computed once per process and file version."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _check_layer(layer: int, n_layers: int) -> int:
    if not isinstance(layer, int) or not 0 <= layer <= n_layers:
        raise InputError(
            f"layer={layer} is outside 0..{n_layers} (0 = conv stem, {n_layers} = last block "
            f"after the encoder LayerNorm); the usual choice is {DEFAULT_LAYER}"
        )
    return layer


def _check_wave(y: torch.Tensor) -> torch.Tensor:
    if y.dim() != 2:
        raise InputError(
            f"MusicFM expects waveforms of shape (batch, n_samples), got {tuple(y.shape)}"
        )
    return y


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ---------------------------------------------------------------------------------------------
# the encoder


class MusicFMEncoder(Encoder):
    """MusicFM as an Encoder: each 30 s window becomes the time-mean of one hidden layer.

    Windows shorter than ``MIN_SECONDS`` (1 s, 25 tokens) are not embedded: below that the
    mean covers too few tokens to describe the music, and under 0.05 s the centred STFT's reflect
    padding is impossible.
    """

    name = "musicfm"
    sample_rate = 24000
    window = WindowRule(30.0, MIN_SECONDS)
    tag_names = None

    def __init__(
        self,
        model: MusicFM,
        *,
        weights_path: Path | None = None,
        batch_size: int = 4,
        fast: bool = True,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size} must be at least 1")
        self.model = model
        self.dim = model.cfg.encoder_dim
        self.device = model.conv.linear.weight.device
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.fast = fast

    def forward(self, windows: torch.Tensor) -> EncoderOutput:
        """Time-mean of layer ``model.layer`` for each window; see :meth:`Encoder.forward`."""
        # equal-length windows in batches of batch_size
        out = np.zeros((len(windows), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(windows), self.batch_size):
                batch = windows[start : start + self.batch_size].to(self.device)
                states = self.model.hidden_states(batch, fast=self.fast)  # (b, T, D)
                out[start : start + len(batch)] = states.float().mean(dim=1).cpu().numpy()
        return EncoderOutput(vectors=out, tags=None)

    def config(self) -> dict[str, Any]:
        """Weights file and sha256, stats, layer and dtype: what changes the vectors."""
        path = self.weights_path
        return {
            "weights": path.name if path else None,
            "weights_sha256": file_sha256(path) if path else None,
            "stats": {
                "melspec_2048_mean": self.model.frontend.mean,
                "melspec_2048_std": self.model.frontend.std,
            },
            "layer": self.model.layer,
            "dtype": str(self.model.conv.linear.weight.dtype).removeprefix("torch."),
        }


@register_encoder("musicfm")
def make_musicfm(
    weights: str | None = None,
    stats: str | None = None,
    layer: int = DEFAULT_LAYER,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 4,
) -> MusicFMEncoder:
    """Build the ``musicfm`` encoder (MSD weights from the hub cache unless paths are given).

    Parameters
    ----------
    weights, stats : str or None, optional (default=None)
        Local checkpoint and stats files; None uses the Hugging Face hub cache.
    layer : int, optional (default=7)
        Hidden layer whose time-mean is the window vector.
    device : str, optional (default="auto")
        "auto", "cpu" or "cuda".
    dtype : str, optional (default="float32")
        "float32", "bfloat16" or "float16" (the latter two are meant for GPUs).
    batch_size : int, optional (default=4)
        Windows per forward pass.

    Returns
    -------
    MusicFMEncoder

    Raises
    ------
    WeightsError
        When the weights cannot be found or do not fit (the message says how to get them).
    """
    weights_path = Path(weights) if weights else _hub_file(HUB_WEIGHTS)
    model = MusicFM.from_pretrained(
        weights_path, stats, layer=layer, device=resolve_device(device), dtype=dtype
    )
    return MusicFMEncoder(model, weights_path=weights_path, batch_size=batch_size)
