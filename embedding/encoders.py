"""The interface every audio encoder implements, the windowing rule, and the registry by name.

An encoder turns mono waveforms at its own sample rate into one vector per window. How a song is
cut into windows is the encoder's :class:`WindowRule`; how the window vectors become one song
vector is :func:`embed_song` (mean over windows), the same for every encoder.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .errors import AudioError, InputError


@dataclass(frozen=True)
class WindowRule:
    """How a clip is cut into fixed windows.

    A clip is cut into consecutive windows of ``window_seconds``. A shorter remainder becomes a
    window of its own when it lasts at least ``min_seconds``, else it is dropped; a clip shorter
    than ``min_seconds`` cannot be embedded. Windows are never padded, so every window in a
    batch of equal length is real audio.
    """

    window_seconds: float
    min_seconds: float

    def describe(self) -> str:
        """One sentence for the store's metadata."""
        return (
            f"consecutive {self.window_seconds:g} s windows from the start; a remainder of at "
            f"least {self.min_seconds:g} s is its own window, a shorter one is dropped; "
            "song vector = mean over windows"
        )


@dataclass(frozen=True)
class EncoderOutput:
    """Per-window results of a forward pass.

    Attributes
    ----------
    vectors : np.ndarray [shape=(n_windows, dim)], float32
    tags : np.ndarray [shape=(n_windows, n_tags)] or None
        Tag probabilities, for encoders that predict tags.
    """

    vectors: np.ndarray
    tags: np.ndarray | None


class Encoder(ABC):
    """A pretrained audio encoder.

    Subclasses set ``name``, ``sample_rate``, ``dim``, ``window`` and ``tag_names`` and implement
    :meth:`forward`, which takes a batch of equal-length windows.
    """

    name: str
    sample_rate: int
    dim: int
    window: WindowRule
    tag_names: list[str] | None = None
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def forward(self, windows: torch.Tensor) -> EncoderOutput:
        """Embed a batch of windows.

        Parameters
        ----------
        windows : torch.Tensor [shape=(batch, n_samples)], float32
            Mono audio at ``sample_rate``; every row the same length, no padding.

        Returns
        -------
        EncoderOutput
            One vector (and tag row, if any) per window.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that changes the vectors: weights file and sha256, layer, dtype, ...

        Two stores can be merged only when their encoder configs are equal.
        """

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        """Cut a mono clip into windows by the encoder's :class:`WindowRule`.

        Raises
        ------
        AudioError
            When the clip is shorter than the rule's minimum.
        """
        return split_windows(y, self.sample_rate, self.window)

    def meta(self) -> dict[str, Any]:
        """The encoder's description for ``meta.json``."""
        return {
            "encoder": self.name,
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "window": asdict(self.window),
            "windowing": self.window.describe(),
            "pooling": "mean over time within a window, then mean over windows",
            "tag_names": self.tag_names,
            **self.config(),
        }


def split_windows(y: np.ndarray, sr: int, rule: WindowRule) -> list[np.ndarray]:
    """Cut ``y`` into windows of ``rule.window_seconds`` at ``sr`` (see :class:`WindowRule`)."""
    # whole windows first
    size = int(round(rule.window_seconds * sr))
    min_size = int(math.ceil(rule.min_seconds * sr))
    if y.ndim != 1:
        raise InputError(f"split_windows expects mono audio, got shape={y.shape}")
    if len(y) < min_size:
        raise AudioError(
            f"clip too short: duration={len(y) / sr:.3f}s, the encoder needs at least "
            f"{rule.min_seconds:g}s"
        )
    n_full = len(y) // size
    windows = [y[i * size : (i + 1) * size] for i in range(n_full)]

    # the remainder, if long enough to stand alone
    rest = y[n_full * size :]
    if len(rest) >= min_size:
        windows.append(rest)
    return windows


def embed_song(encoder: Encoder, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Embed one clip: split into windows, forward windows of equal length together, average.

    Parameters
    ----------
    encoder : Encoder
    y : np.ndarray [shape=(n_samples,)]
        Mono audio at ``encoder.sample_rate``.

    Returns
    -------
    vector : np.ndarray [shape=(dim,)], float32
    tags : np.ndarray [shape=(n_tags,)] or None
    """
    out = forward_windows(encoder, encoder.split(y))
    tags = None if out.tags is None else out.tags.mean(axis=0)
    return out.vectors.mean(axis=0), tags


def forward_windows(encoder: Encoder, windows: list[np.ndarray]) -> EncoderOutput:
    """Run ``encoder`` on windows of possibly different lengths, grouping equal lengths."""
    # group by length: a batch never mixes lengths, so nothing is padded
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_len.setdefault(len(w), []).append(i)

    vectors = np.zeros((len(windows), encoder.dim), dtype=np.float32)
    n_tags = len(encoder.tag_names) if encoder.tag_names else 0
    tags = np.zeros((len(windows), n_tags), dtype=np.float32) if n_tags else None
    for idx in by_len.values():
        batch = torch.from_numpy(np.stack([windows[i] for i in idx]).astype(np.float32))
        out = encoder.forward(batch)
        vectors[idx] = out.vectors
        if tags is not None and out.tags is not None:
            tags[idx] = out.tags
    return EncoderOutput(vectors=vectors, tags=tags)


EncoderFactory = Callable[..., Encoder]
_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Class or function decorator that makes an encoder available by ``name``."""

    def wrap(factory: EncoderFactory) -> EncoderFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_encoders() -> list[str]:
    """Names accepted by :func:`get_encoder` and ``embed-audio --encoder``."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the encoder registered as ``name``; ``options`` go to its factory.

    Common options are ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``), ``dtype`` and, for
    encoders with external weights, ``weights`` / ``stats`` paths.

    Raises
    ------
    InputError
        When no encoder has that name.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise InputError(f"unknown encoder={name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"`` or ``"cuda"`` into a torch device, checking availability."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} asked for but CUDA is not available; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"device={device!r} is not one of auto, cpu, cuda")
    return torch.device(device)


def _load_builtin() -> None:
    # importing the modules registers their encoders
    from . import musicfm, musicnn  # noqa: F401
