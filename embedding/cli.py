"""``embed-audio``: embed a folder (or a manifest) of audio files into an embedding store.

Decoding runs in worker processes; the main process cuts songs into windows, runs the model on
windows of equal length from several songs at once, and writes results to the store in
crash-safe parts (see :mod:`embedding.store`). A rerun with the same ``--out`` resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ._log import configure_cli_logging, logger
from .audio import AUDIO_EXTENSIONS, is_audio_path, load_audio
from .encoders import Encoder, available_encoders, get_encoder
from .errors import AudioError, EncoreError, InputError
from .store import FAILURES_FILE, EmbeddingStore, Failure, StoreWriter, load_store

DEFAULT_BATCH_SIZE = 16
DEFAULT_NUM_WORKERS = 2
#: A part is written once a chunk holds this many songs and at least one batch of windows.
PART_MIN_SONGS = 16


@dataclass(frozen=True)
class Job:
    """One song to embed."""

    song_id: str
    path: Path


@dataclass
class _Chunk:
    """Songs decoded and cut into windows, waiting to go through the model together."""

    ids: list[str] = field(default_factory=list)
    windows: list[list[np.ndarray]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    n_windows: int = 0

    def add(self, song_id: str, windows: list[np.ndarray]) -> None:
        self.ids.append(song_id)
        self.windows.append(windows)
        self.n_windows += len(windows)

    def ready(self, batch_size: int) -> bool:
        return self.n_windows >= batch_size and len(self.ids) >= PART_MIN_SONGS


@dataclass
class _Tally:
    embedded: int = 0
    failed: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    duplicates: int = 0
    seconds: float = 0.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``embed-audio``.

    Parameters
    ----------
    argv : sequence of str or None, optional (default=None)
        Command-line arguments; None reads ``sys.argv``.

    Returns
    -------
    int
        0 when every song was embedded, 1 when some failed (the store is still written), 2 for
        usage errors (bad arguments, missing manifest or weights, mismatched store), 130 when
        interrupted.

    Examples
    --------
    ``embed-audio songs/ --out store-musicnn --encoder musicnn --max-seconds 30``
    """
    # arguments and logging
    args = _parser().parse_args(argv)
    configure_cli_logging(args.verbose)

    # run; usage problems become one line on stderr
    try:
        return _run(args)
    except EncoreError as exc:
        print(f"embed-audio: error: {exc}", file=sys.stderr)
        return 2
    except BrokenProcessPool:
        print(
            "embed-audio: error: a decoding worker died (out of memory?); finished parts are "
            "kept, rerun the same command to resume, perhaps with a smaller --num-workers",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "embed-audio: interrupted; finished parts are kept, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


def collect_folder(folder: Path) -> tuple[list[Job], int]:
    """Audio files under ``folder`` (recursive), song id = file stem, sorted by path.

    Parameters
    ----------
    folder : Path

    Returns
    -------
    jobs : list of Job
    n_duplicates : int
        Files left out because an earlier path (in sorted order) has the same stem.

    Raises
    ------
    InputError
        When ``folder`` is not a folder.
    """
    # every path with an audio ending; a directory named like one is reported when decoded
    if not folder.is_dir():
        raise InputError(f"INPUT={str(folder)!r} is not a folder; give a folder or --manifest CSV")
    paths = sorted(p for p in folder.rglob("*") if is_audio_path(p))

    # one file per song id
    jobs: dict[str, Job] = {}
    duplicates: list[Path] = []
    for path in paths:
        if path.stem in jobs:
            duplicates.append(path)
        else:
            jobs[path.stem] = Job(path.stem, path)
    if duplicates:
        logger.warning(
            "%d files share a song id (file stem) with an earlier file and are left out, e.g. "
            "%s; give a --manifest to choose ids",
            len(duplicates),
            ", ".join(str(p) for p in duplicates[:3]),
        )
    return list(jobs.values()), len(duplicates)


def read_manifest(manifest: Path) -> list[Job]:
    """Jobs from a CSV with columns ``song_id,path`` (paths relative to the CSV's folder allowed).

    Parameters
    ----------
    manifest : Path

    Returns
    -------
    list of Job
        In the manifest's order.

    Raises
    ------
    InputError
        When the file is missing, lacks a column, has an empty cell or repeats a song id.
    """
    # the file and its header
    if not manifest.is_file():
        raise InputError(f"manifest={str(manifest)!r} does not exist")
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "song_id" not in columns or "path" not in columns:
            raise InputError(
                f"manifest={str(manifest)!r} needs the columns song_id,path; found {columns}"
            )

        # one job per row
        jobs = []
        for line, row in enumerate(reader, start=2):
            song_id, path = row["song_id"], row["path"]
            if not song_id or not path:
                raise InputError(f"manifest={str(manifest)!r} line {line}: empty song_id or path")
            file = Path(path)
            jobs.append(Job(song_id, file if file.is_absolute() else manifest.parent / file))

    # ids must be unique
    repeated = [song_id for song_id, n in Counter(j.song_id for j in jobs).items() if n > 1]
    if repeated:
        raise InputError(
            f"manifest={str(manifest)!r} repeats song ids, e.g. {repeated[:3]}; each id once"
        )
    return jobs


def _run(args: argparse.Namespace) -> int:
    """Everything after argument parsing; raises EncoreError for usage problems."""
    # what to embed
    tally = _Tally()
    if args.manifest is not None:
        jobs = read_manifest(args.manifest)
    else:
        jobs, tally.duplicates = collect_folder(args.input)
    if not jobs:
        raise InputError(
            f"no audio files found under INPUT={str(args.input)!r} "
            f"(endings: {' '.join(sorted(AUDIO_EXTENSIONS))})"
        )

    # the encoder, then the store it writes to
    encoder = _build_encoder(args)
    config = {**encoder.meta(), "max_seconds": args.max_seconds}
    with StoreWriter.open(args.out, config) as writer:
        todo = []
        for job in jobs:
            if job.song_id in writer.done_ids:
                tally.skipped_done += 1
            elif job.song_id in writer.failed and not args.retry_failed:
                tally.skipped_failed += 1
            else:
                todo.append(job)
        logger.info(
            "%d songs to embed with encoder=%s on device=%s (%d already in the store, %d "
            "recorded failures skipped)",
            len(todo),
            encoder.name,
            encoder.device,
            tally.skipped_done,
            tally.skipped_failed,
        )

        # embed, then consolidate
        start = time.perf_counter()
        _embed(encoder, todo, writer, args, tally)
        tally.seconds = time.perf_counter() - start
        store = writer.finalise() if writer.n_pending_parts or not writer.complete else None
    if store is None:
        store = load_store(args.out)

    # the summary on stdout
    _print_summary(tally, store, args.out)
    return 1 if tally.failed else 0


def _build_encoder(args: argparse.Namespace) -> Encoder:
    """The encoder with only the options the user gave (the encoder's defaults otherwise)."""
    options: dict[str, Any] = {"device": args.device}
    given = {"dtype": args.dtype, "weights": args.weights, "stats": args.stats, "layer": args.layer}
    options.update({name: value for name, value in given.items() if value is not None})
    try:
        return get_encoder(args.encoder, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InputError(
            f"encoder={args.encoder!r} does not take one of the options given "
            f"({', '.join('--' + n for n in options if n != 'device')}): {exc}"
        ) from exc


def _embed(
    encoder: Encoder,
    todo: list[Job],
    writer: StoreWriter,
    args: argparse.Namespace,
    tally: _Tally,
) -> None:
    """Decode, window, batch across songs, forward, and write parts."""
    # one progress bar over songs, log lines printed above it
    if not todo:
        return
    decoded = _decode_all(
        todo, encoder.sample_rate, args.max_seconds, args.num_workers, verbose=args.verbose
    )
    bar = tqdm(total=len(todo), unit="song", desc="embed-audio", file=sys.stderr, mininterval=0.5)
    with logging_redirect_tqdm(), bar, contextlib.closing(decoded):
        chunk = _Chunk()
        for job, y, reason in decoded:
            # windows, or the reason there are none
            windows: list[np.ndarray] = []
            if y is not None:
                try:
                    windows = encoder.split(y)
                except AudioError as exc:
                    reason = str(exc)
            if reason is not None:
                logger.warning("cannot embed song_id=%r: %s", job.song_id, reason)
                chunk.failures.append(Failure(str(job.path), job.song_id, reason))
                tally.failed += 1
                bar.update(1)
                bar.set_postfix(failed=tally.failed)
            else:
                chunk.add(job.song_id, windows)

            # a full chunk goes through the model and into a part
            if chunk.ready(args.batch_size):
                _flush(encoder, chunk, writer, args.batch_size, bar, tally)
                chunk = _Chunk()

        # the last, partly filled chunk
        if chunk.ids or chunk.failures:
            _flush(encoder, chunk, writer, args.batch_size, bar, tally)


def _flush(
    encoder: Encoder,
    chunk: _Chunk,
    writer: StoreWriter,
    batch_size: int,
    bar: tqdm[Any],
    tally: _Tally,
) -> None:
    """Embed a chunk's songs and record them, with its failures, as one part."""
    vectors, tags = embed_windows(encoder, chunk.windows, batch_size=batch_size)
    writer.add_part(chunk.ids, vectors, tags, chunk.failures)
    tally.embedded += len(chunk.ids)
    bar.update(len(chunk.ids))


def embed_windows(
    encoder: Encoder, songs: list[list[np.ndarray]], *, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Song vectors for several songs, windows of equal length batched across songs.

    Parameters
    ----------
    encoder : Encoder
    songs : list of list of np.ndarray
        Each song's windows (mono, at ``encoder.sample_rate``).
    batch_size : int
        Most windows per forward call.

    Returns
    -------
    vectors : np.ndarray [shape=(n_songs, dim)], float32
        Mean of each song's window vectors, as :func:`embedding.encoders.embed_song` computes.
    tags : np.ndarray [shape=(n_songs, n_tags)] or None
    """
    # every window, remembering its song; windows grouped by length
    owner = np.array([s for s, windows in enumerate(songs) for _ in windows], dtype=np.int64)
    flat = [w for windows in songs for w in windows]
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(flat):
        by_len.setdefault(len(w), []).append(i)

    # forward calls of at most batch_size windows, never mixing lengths
    n_tags = len(encoder.tag_names) if encoder.tag_names else 0
    window_vectors = np.zeros((len(flat), encoder.dim), dtype=np.float32)
    window_tags = np.zeros((len(flat), n_tags), dtype=np.float32) if n_tags else None
    with torch.inference_mode():
        for idx in by_len.values():
            for start in range(0, len(idx), batch_size):
                rows = idx[start : start + batch_size]
                batch = torch.from_numpy(np.stack([flat[i] for i in rows]).astype(np.float32))
                out = encoder.forward(batch)
                window_vectors[rows] = out.vectors
                if window_tags is not None and out.tags is not None:
                    window_tags[rows] = out.tags

    # song vector = mean over its windows
    vectors = np.zeros((len(songs), encoder.dim), dtype=np.float32)
    tags = np.zeros((len(songs), n_tags), dtype=np.float32) if window_tags is not None else None
    for s in range(len(songs)):
        vectors[s] = window_vectors[owner == s].mean(axis=0)
        if tags is not None and window_tags is not None:
            tags[s] = window_tags[owner == s].mean(axis=0)
    return vectors, tags


def _decode_all(
    todo: list[Job],
    sr: int,
    max_seconds: float | None,
    num_workers: int,
    *,
    verbose: int,
) -> Generator[tuple[Job, np.ndarray | None, str | None], None, None]:
    """Decoded songs in ``todo`` order: (job, audio, None) or (job, None, reason)."""
    # in this process
    if num_workers == 0:
        for job in todo:
            y, reason = decode_job(str(job.path), sr, max_seconds)
            yield job, y, reason
        return

    # in worker processes, a few songs ahead of the model; forked on Linux as torch's DataLoader
    # does (workers never touch torch), spawned elsewhere
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(
        num_workers, mp_context=context, initializer=_worker_init, initargs=(verbose,)
    )
    try:
        jobs = iter(todo)
        pending: deque[tuple[Job, Future[tuple[np.ndarray | None, str | None]]]] = deque()
        for job in islice(jobs, 4 * num_workers):
            pending.append((job, pool.submit(decode_job, str(job.path), sr, max_seconds)))
        while pending:
            job, future = pending.popleft()
            for nxt in islice(jobs, 1):
                pending.append((nxt, pool.submit(decode_job, str(nxt.path), sr, max_seconds)))
            y, reason = future.result()
            yield job, y, reason
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_job(
    path: str, sr: int, max_seconds: float | None
) -> tuple[np.ndarray | None, str | None]:
    """Decode one file for a worker: (audio, None), or (None, reason) when it cannot be used."""
    try:
        return load_audio(path, sr=sr, max_seconds=max_seconds), None
    except AudioError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder bug must not stop the batch
        return None, f"unexpected {type(exc).__name__} while decoding: {exc}"


def _worker_init(verbose: int) -> None:
    """Worker set-up: the command's logging, Ctrl-C left to the main process, and an exit as
    soon as the main process is gone (after a kill -9 nothing else would end the worker)."""
    configure_cli_logging(verbose)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """Poll the parent process id; a change means the parent died and the worker was adopted."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _print_summary(tally: _Tally, store: EmbeddingStore, out: Path) -> None:
    n_done = tally.embedded + tally.failed
    speed = f"{n_done / tally.seconds:.2f} songs/s over {tally.seconds:.1f} s; " if n_done else ""
    print(
        f"embedded {tally.embedded}, skipped {tally.skipped_done} already in the store, "
        f"failed {tally.failed}"
        + (f" (reasons in {out / FAILURES_FILE})" if tally.failed else "")
        + (
            f", skipped {tally.skipped_failed} recorded failures (--retry-failed retries them)"
            if tally.skipped_failed
            else ""
        )
        + (f", left out {tally.duplicates} files with a repeated stem" if tally.duplicates else "")
    )
    print(
        f"{speed}store {out}: {len(store)} songs, dim {store.dim}, fingerprint {store.fingerprint}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embed-audio",
        description=(
            "Embed audio files into an embedding store (ids, vectors, tags, meta.json). "
            "Rerunning with the same --out resumes: songs already embedded are skipped."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "input",
        nargs="?",
        type=Path,
        metavar="INPUT",
        help="folder searched recursively for audio files; song id = file name without ending",
    )
    source.add_argument(
        "--manifest",
        type=Path,
        help="CSV with columns song_id,path (paths may be relative to the CSV's folder)",
    )
    parser.add_argument("--out", type=Path, required=True, help="store folder (created or resumed)")
    parser.add_argument(
        "--encoder",
        default="musicfm",
        choices=available_encoders(),
        help="encoder (default: %(default)s; musicnn works offline with shipped weights)",
    )
    parser.add_argument("--weights", help="local weights file (encoders with external weights)")
    parser.add_argument("--stats", help="local normalisation stats file (musicfm)")
    parser.add_argument(
        "--layer",
        type=_layer,
        help="layer the vectors come from: a block number for musicfm (0-12, default 7), "
        "penultimate, mean_pool or max_pool for musicnn (default penultimate)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the model runs (default: %(default)s, CUDA when available)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="model precision (encoder's default if unset)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="windows per forward call, gathered across songs (default: %(default)s)",
    )
    parser.add_argument(
        "--num-workers",
        type=_non_negative_int,
        default=DEFAULT_NUM_WORKERS,
        help="decoding processes; 0 decodes in the main process (default: %(default)s)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        help="embed only the first seconds of each file (whole files if unset)",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help=f"retry the songs recorded in {FAILURES_FILE} (skipped by default)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    return parser


def _layer(text: str) -> int | str:
    """A ``--layer`` value: a number (a block) as an int, a name as it is."""
    return int(text) if text.isdigit() else text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


if __name__ == "__main__":
    sys.exit(main())
