"""Decoding audio files into mono float32 waveforms at an encoder's sample rate.

:func:`load_audio` reads with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...) and
falls back to librosa (audioread, which needs ffmpeg or GStreamer) for anything else. Channels
are averaged into mono and the result is resampled with soxr at high quality (the same samples
as librosa's ``soxr_hq``). Every way a file can be unusable raises
:class:`~embedding.errors.AudioError` with the reason in its message.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ._log import logger
from .errors import AudioError, InputError

#: File name endings treated as audio when a folder is scanned (compared in lower case).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au"}
)

#: Clips whose root mean square stays below this are reported as silent (about -100 dBFS).
SILENCE_RMS = 1e-5


def load_audio(path: str | Path, *, sr: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file into a mono float32 waveform at ``sr``.

    Parameters
    ----------
    path : str or Path
        The audio file.
    sr : int
        Target sample rate in Hz; the file is resampled (soxr, high quality) when it differs.
    max_seconds : float or None, optional (default=None)
        Keep only the first ``max_seconds`` of audio; None keeps the whole file.

    Returns
    -------
    y : np.ndarray [shape=(n_samples,)], float32
        Mono audio, channels averaged.

    Raises
    ------
    AudioError
        When the path is missing, a directory or an empty file, when no decoder can read it (not
        audio, corrupt, unsupported format), when it holds no samples, or when samples are NaN
        or infinite.
    InputError
        When ``sr`` or ``max_seconds`` is not positive.

    Examples
    --------
    >>> y = load_audio("song.mp3", sr=16000, max_seconds=30)  # doctest: +SKIP
    """
    # arguments and the file itself
    path = Path(path)
    if sr <= 0:
        raise InputError(f"sr={sr} must be a positive sample rate in Hz")
    if max_seconds is not None and not max_seconds > 0:
        raise InputError(f"max_seconds={max_seconds} must be positive, or None for whole files")
    _check_file(path)

    # decode, then down-mix by channel mean
    y, native_sr = _decode(path, max_seconds)
    if y.shape[0] == 0:
        raise AudioError(f"zero-length audio: path={str(path)!r} decodes to 0 samples")
    if not np.isfinite(y).all():
        n_bad = int(np.count_nonzero(~np.isfinite(y)))
        raise AudioError(
            f"path={str(path)!r} holds {n_bad} NaN or infinite samples; re-export the file"
        )
    y = y.mean(axis=1, dtype=np.float32) if y.shape[1] > 1 else y[:, 0]

    # resample to the encoder's rate and cap the length exactly
    if native_sr != sr:
        y = _resample(y, native_sr, sr)
    if max_seconds is not None:
        y = y[: int(round(max_seconds * sr))]
    y = np.ascontiguousarray(y, dtype=np.float32)

    # silence is embedded, but worth a word
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if rms < SILENCE_RMS:
        logger.warning(
            "path=%r is silent (rms=%.1e); it is embedded anyway, but its vector says "
            "nothing about the music",
            str(path),
            rms,
        )
    return y


def is_audio_path(path: Path) -> bool:
    """Whether ``path`` ends in one of :data:`AUDIO_EXTENSIONS` and is not a hidden file."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _check_file(path: Path) -> None:
    # the cheap failures first, each with its own reason
    if path.is_dir():
        raise AudioError(f"path={str(path)!r} is a directory, not an audio file")
    if not path.exists():
        raise AudioError(f"file not found: path={str(path)!r}")
    if path.stat().st_size == 0:
        raise AudioError(f"empty file (0 bytes): path={str(path)!r}")


def _decode(path: str | Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Frames as (n_frames, n_channels) float32 and the file's own rate."""
    # soundfile reads only the frames asked for
    try:
        with sf.SoundFile(str(path)) as f:
            native_sr = int(f.samplerate)
            frames = -1 if max_seconds is None else int(math.ceil(max_seconds * native_sr))
            y = f.read(frames, dtype="float32", always_2d=True)
        return y, native_sr
    except (sf.LibsndfileError, RuntimeError) as exc:
        sf_reason = str(exc)

    # librosa for formats libsndfile lacks; it needs an audioread backend such as ffmpeg
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, rate = librosa.load(str(path), sr=None, mono=False, duration=max_seconds)
    except Exception as exc:  # any decoder failure becomes the file's reason
        other = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        raise AudioError(
            f"cannot decode path={str(path)!r}: not audio, corrupt, or a format without a "
            f"decoder here (soundfile: {sf_reason}; librosa: {other}); for formats libsndfile "
            "lacks, install ffmpeg"
        ) from exc
    y = np.asarray(y, dtype=np.float32)
    y = y[:, None] if y.ndim == 1 else y.T
    return y, int(rate)


def _resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr at high quality: what ``librosa.resample(res_type="soxr_hq")`` does, sample for sample,
    without the second or two librosa spends importing numba in every decoding process."""
    # soxr may stop one sample short; like librosa, zero-pad to ceil(n * target_sr / orig_sr)
    out: np.ndarray = soxr.resample(y, orig_sr, target_sr, quality="HQ")
    n_out = int(math.ceil(len(y) * target_sr / orig_sr))
    if len(out) < n_out:
        pad = np.zeros((n_out - len(out), *out.shape[1:]), dtype=out.dtype)
        out = np.concatenate([out, pad])
    return out[:n_out]
