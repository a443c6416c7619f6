"""The embedding store: one folder holding song ids, song vectors, tag scores and metadata.

Layout of a store folder::

    meta.json            format, status, encoder configuration, count, fingerprint, file names
    ids-<gen>.json       song ids in row order (a JSON list; ids may contain / + = and the like)
    vectors-<gen>.npy    float32 [shape=(n_songs, dim)], read memory-mapped
    tags-<gen>.npy       float32 [shape=(n_songs, n_tags)], for encoders that predict tags
    failures.csv         path,song_id,reason for every song that could not be embedded
    parts/part-*.npz     results of a run not yet consolidated (absent in a finished store)

Crash safety. Every file is written to a temporary name, flushed, fsynced and moved into place
with :func:`os.replace`. A batch job adds results as small part files; at the end it writes a new
generation of ids/vectors/tags next to the old one and then replaces ``meta.json``, which names
the generation in use: that single replace is the commit. Files of other generations and the
consolidated parts are deleted afterwards. A crash at any moment therefore leaves either the old
or the new consistent state plus parts that a rerun consolidates.

Reading an unfinished store. While the first run into a folder has not finished, ``meta.json``
says ``"status": "in_progress"`` and :func:`load_store` refuses the store (``allow_partial=True``
reads the parts written so far). A finished store that a later run is extending stays
``"complete"``: :func:`load_store` returns its last consolidated state and warns about the parts
it leaves out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from ._log import logger
from .errors import InputError, MismatchError

try:  # POSIX advisory locks; elsewhere a store is not protected against two writers
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STORE_FORMAT = "encore-embedding-store"
STORE_FORMAT_VERSION = 1
META_FILE = "meta.json"
FAILURES_FILE = "failures.csv"
PARTS_DIR = "parts"
LOCK_FILE = ".lock"
FAILURE_COLUMNS = ("path", "song_id", "reason")

#: Keys of ``meta.json`` that describe the store's state rather than how vectors are made.
BOOKKEEPING_KEYS = frozenset(
    {
        "format",
        "format_version",
        "status",
        "count",
        "n_failed",
        "files",
        "fingerprint",
        "package_version",
        "created",
        "updated",
    }
)

_GEN_FILE = re.compile(r"^(?:ids|vectors|tags)-(\d+)\.(?:json|npy)$")
_PART_FILE = re.compile(r"^part-(\d+)\.npz$")
_HASH_CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class Failure:
    """A song that could not be embedded, as one row of ``failures.csv``."""

    path: str
    song_id: str
    reason: str


class EmbeddingStore:
    """Song vectors of one store, with their ids, tag scores and metadata.

    Attributes
    ----------
    path : Path
        The store folder.
    ids : list of str
        Song ids in row order.
    vectors : np.ndarray [shape=(n_songs, dim)], float32
        Memory-mapped, read-only.
    tags : np.ndarray [shape=(n_songs, n_tags)] or None
        Tag scores for encoders that predict tags.
    meta : dict
        The content of ``meta.json``.
    """

    def __init__(
        self,
        path: Path,
        ids: list[str],
        vectors: np.ndarray,
        meta: dict[str, Any],
        *,
        tags: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.ids = ids
        self.vectors = vectors
        self.tags = tags
        self.meta = meta

    @property
    def dim(self) -> int:
        """Length of each song vector."""
        return int(self.vectors.shape[1])

    @property
    def tag_names(self) -> list[str] | None:
        """Names of the tag columns, or None for encoders without tags."""
        names = self.meta.get("tag_names")
        return None if names is None else list(names)

    @cached_property
    def index(self) -> dict[str, int]:
        """Row of every song id."""
        return {song_id: row for row, song_id in enumerate(self.ids)}

    def row_of(self, song_id: str) -> int:
        """Row of ``song_id`` in :attr:`vectors`.

        Raises
        ------
        KeyError
            When the store has no such song.
        """
        try:
            return self.index[song_id]
        except KeyError:
            raise KeyError(f"song_id={song_id!r} is not in store={str(self.path)!r}") from None

    @property
    def fingerprint(self) -> str:
        """Short hex digest of the encoder configuration, the ids and the vectors."""
        cached = self.meta.get("fingerprint")
        if isinstance(cached, str):
            return cached
        return compute_fingerprint(store_config(self.meta), self.ids, self.vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, song_id: object) -> bool:
        return song_id in self.index

    def __repr__(self) -> str:
        encoder = self.meta.get("encoder", "?")
        return (
            f"EmbeddingStore({str(self.path)!r}, n_songs={len(self)}, dim={self.dim}, "
            f"encoder={encoder!r})"
        )


def load_store(path: str | Path, *, allow_partial: bool = False) -> EmbeddingStore:
    """Open an embedding store folder written by ``embed-audio`` or :func:`write_store`.

    Parameters
    ----------
    path : str or Path
        The store folder.
    allow_partial : bool, optional (default=False)
        Read a store whose run has not finished: consolidated rows plus the parts written so far
        (those vectors are then held in memory, not memory-mapped).

    Returns
    -------
    EmbeddingStore

    Raises
    ------
    InputError
        When the folder is missing, is not a store, is unfinished (and ``allow_partial`` is
        False), or its files disagree with each other.

    Examples
    --------
    >>> store = load_store("songs-musicnn")  # doctest: +SKIP
    >>> store.vectors[store.row_of("BQ/7bN+6Q0=")]  # doctest: +SKIP
    """
    # the folder and its metadata
    path = Path(path)
    if not path.is_dir():
        raise InputError(
            f"store={str(path)!r} does not exist; create it with: embed-audio INPUT --out {path}"
        )
    meta = _read_meta(path)
    if meta is None:
        if _part_files(path):
            raise _incomplete_error(path, 0, len(_part_files(path)))
        raise InputError(f"store={str(path)!r} is not an embedding store: {META_FILE} is missing")

    # a store whose first run has not finished is refused unless asked for
    parts = _part_files(path)
    if meta.get("status") != "complete" and not allow_partial:
        raise _incomplete_error(path, int(meta.get("count", 0)), len(parts))

    # the consolidated rows, memory-mapped; a run adding to them may have left parts
    ids, vectors, tags = _read_generation(path, meta)
    if not parts or not allow_partial:
        if parts:
            logger.warning(
                "store=%r has %d parts of an unfinished run that are not included; rerun "
                "embed-audio with the same --out to finish it",
                str(path),
                len(parts),
            )
        return EmbeddingStore(path, ids, vectors, meta, tags=tags)

    # plus the parts of the unfinished run, in memory
    seen = set(ids)
    all_vectors = [np.asarray(vectors)]
    all_tags = [] if tags is None else [np.asarray(tags)]
    for part in parts:
        content = _read_part(part)
        keep = [i for i, song_id in enumerate(content.ids) if song_id not in seen]
        seen.update(content.ids[i] for i in keep)
        ids.extend(content.ids[i] for i in keep)
        all_vectors.append(content.vectors[keep])
        if content.tags is not None:
            all_tags.append(content.tags[keep])
    merged_tags = np.concatenate(all_tags) if all_tags else None
    return EmbeddingStore(path, ids, np.concatenate(all_vectors), meta, tags=merged_tags)


def write_store(
    path: str | Path,
    ids: Sequence[str],
    vectors: np.ndarray,
    meta: dict[str, Any],
    *,
    tags: np.ndarray | None = None,
    tag_names: Sequence[str] | None = None,
) -> EmbeddingStore:
    """Write a complete store in one go, replacing any store already at ``path``.

    Parameters
    ----------
    path : str or Path
        The store folder; created when missing. An existing folder must be empty or a store.
    ids : sequence of str
        Unique song ids, one per row of ``vectors``.
    vectors : np.ndarray [shape=(n_songs, dim)]
        Song vectors; stored as float32.
    meta : dict
        Encoder configuration and anything else worth keeping (JSON-serialisable), e.g.
        ``{"encoder": "musicnn", ...}``; ``dim`` and ``tag_names`` are filled in.
    tags : np.ndarray [shape=(n_songs, n_tags)] or None, optional (default=None)
        Tag scores per song.
    tag_names : sequence of str or None, optional (default=None)
        Names of the tag columns; required with ``tags``.

    Returns
    -------
    EmbeddingStore
        The store as :func:`load_store` reads it back.

    Raises
    ------
    InputError
        When shapes disagree, ids repeat, values are not finite, ``meta`` uses a reserved key or
        the folder holds something other than a store.
    """
    # check what arrived
    path = Path(path)
    ids = [str(song_id) for song_id in ids]
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise InputError(
            f"vectors.shape={vectors.shape} must be (n_songs, dim) with n_songs=len(ids)={len(ids)}"
        )
    _check_unique(ids)
    if not np.isfinite(vectors).all():
        raise InputError("vectors hold NaN or infinite values; a store keeps finite vectors only")
    if (tags is None) != (tag_names is None):
        raise InputError("tags and tag_names must be given together")
    if tags is not None and tag_names is not None:
        tags = np.asarray(tags, dtype=np.float32)
        if tags.shape != (len(ids), len(tag_names)):
            raise InputError(
                f"tags.shape={tags.shape} must be (n_songs, n_tags)=({len(ids)}, {len(tag_names)})"
            )

    # the configuration part of the metadata
    config = dict(meta)
    if "dim" in config and int(config["dim"]) != vectors.shape[1]:
        raise InputError(f"meta dim={config['dim']} but vectors.shape[1]={vectors.shape[1]}")
    config["dim"] = int(vectors.shape[1])
    config["tag_names"] = None if tag_names is None else list(tag_names)
    config = _normalise_config(config)

    # write it under the folder's lock, then read it back
    path.mkdir(parents=True, exist_ok=True)
    _check_store_folder(path)
    with _StoreLock(path, create=True):
        old = _read_meta(path)
        base = _new_meta(config, created=None if old is None else old.get("created"))
        _commit(path, base, ids, [(vectors, tags)], vectors.shape[1], [], old_meta=old)
    return load_store(path)


def read_failures(path: str | Path) -> list[Failure]:
    """Rows of a store's ``failures.csv`` (an empty list when there is none).

    Parameters
    ----------
    path : str or Path
        The store folder.

    Returns
    -------
    list of Failure
    """
    file = Path(path) / FAILURES_FILE
    if not file.is_file():
        return []
    with open(file, newline="", encoding="utf-8") as f:
        return [Failure(r["path"], r["song_id"], r["reason"]) for r in csv.DictReader(f)]


def store_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``meta`` that decide the vectors (everything but :data:`BOOKKEEPING_KEYS`)."""
    return {key: value for key, value in meta.items() if key not in BOOKKEEPING_KEYS}


def config_diff(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two configurations, sorted, missing keys included."""
    stored, wanted = _normalise_config(stored), _normalise_config(wanted)
    keys = set(stored) | set(wanted)
    return sorted(key for key in keys if stored.get(key) != wanted.get(key))


def compute_fingerprint(config: dict[str, Any], ids: Sequence[str], vectors: np.ndarray) -> str:
    """Hash of configuration, ids and vector bytes, read in chunks (cheap for 420 k x 1024).

    Parameters
    ----------
    config : dict
        The encoder configuration (see :func:`store_config`).
    ids : sequence of str
    vectors : np.ndarray [shape=(n_songs, dim)]

    Returns
    -------
    str
        16 hex digits.
    """
    # configuration and ids
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps(_normalise_config(config), sort_keys=True).encode())
    digest.update(b"\0" + json.dumps(list(ids)).encode() + b"\0")
    digest.update(repr(tuple(vectors.shape)).encode())

    # vectors, a few megabytes at a time
    rows = max(1, _HASH_CHUNK_BYTES // max(1, vectors.shape[1] * 4))
    for start in range(0, vectors.shape[0], rows):
        digest.update(np.ascontiguousarray(vectors[start : start + rows], dtype=np.float32).data)
    return digest.hexdigest()


class StoreWriter:
    """Adds embedded songs to a store in crash-safe parts and consolidates them at the end.

    Use :meth:`open`, then :meth:`add_part` as results arrive and :meth:`finalise` at the end;
    the writer holds the folder's lock until :meth:`close` (or the end of a ``with`` block).

    Attributes
    ----------
    path : Path
    config : dict
        The configuration every vector of the store was made with.
    done_ids : set of str
        Songs already embedded, consolidated or in parts.
    failed : dict of str to Failure
        Recorded failures by song id, minus songs embedded since.
    """

    def __init__(self, path: Path, config: dict[str, Any], lock: _StoreLock) -> None:
        self.path = path
        self.config = config
        self._lock = lock
        self._meta = _read_meta(path)
        self._n_parts = 0
        self._next_seq = 1
        self.done_ids: set[str] = set()
        self.failed: dict[str, Failure] = {}

    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any]) -> StoreWriter:
        """Create a store at ``path`` or resume the one there.

        Parameters
        ----------
        path : str or Path
            The store folder; created when missing.
        config : dict
            What makes the vectors: ``Encoder.meta()`` plus options such as ``max_seconds``.

        Returns
        -------
        StoreWriter

        Raises
        ------
        MismatchError
            When the store there was made with a different configuration.
        InputError
            When the folder holds something else, or another process is writing to it.
        """
        # lock the folder, then compare configurations
        path = Path(path)
        config = _normalise_config(config)
        reserved = BOOKKEEPING_KEYS & set(config)
        if reserved:
            raise InputError(f"config uses reserved keys={sorted(reserved)}")
        path.mkdir(parents=True, exist_ok=True)
        _check_store_folder(path)
        lock = _StoreLock(path, create=True)
        lock.acquire()
        try:
            writer = cls(path, config, lock)
            writer._check_config()
            writer._tidy()
            writer._scan()
        except BaseException:
            lock.release()
            raise
        return writer

    @property
    def complete(self) -> bool:
        """Whether the store on disk is finished (its last run was consolidated)."""
        return self._meta is not None and self._meta.get("status") == "complete"

    @property
    def n_pending_parts(self) -> int:
        """Parts written and not yet consolidated."""
        return self._n_parts

    def add_part(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        tags: np.ndarray | None = None,
        failures: Iterable[Failure] = (),
    ) -> Path:
        """Record a batch of results atomically as one part file.

        Parameters
        ----------
        ids : sequence of str
            Songs embedded in this batch.
        vectors : np.ndarray [shape=(len(ids), dim)]
        tags : np.ndarray [shape=(len(ids), n_tags)] or None, optional (default=None)
        failures : iterable of Failure, optional (default=())
            Songs of this batch that could not be embedded.

        Returns
        -------
        Path
            The part file written.
        """
        # the first part of a new store marks it unfinished; a finished store stays readable
        failures = list(failures)
        if self._meta is None:
            self._mark_in_progress()

        # one npz: ids and failures as JSON bytes, vectors and tags as float32
        id_list = [str(song_id) for song_id in ids]
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(id_list):
            raise InputError(
                f"vectors.shape={vectors.shape} must be (n_songs, dim) with n_songs={len(id_list)}"
            )
        records = {"ids": id_list, "failures": [[f.path, f.song_id, f.reason] for f in failures]}
        arrays: dict[str, np.ndarray] = {
            "records": np.frombuffer(json.dumps(records).encode(), dtype=np.uint8),
            "vectors": vectors,
        }
        if tags is not None:
            arrays["tags"] = np.asarray(tags, dtype=np.float32)
            if arrays["tags"].ndim != 2 or arrays["tags"].shape[0] != len(id_list):
                raise InputError(f"tags.shape={arrays['tags'].shape} must be (n_songs, n_tags)")
        part = self.path / PARTS_DIR / f"part-{self._next_seq:06d}.npz"
        part.parent.mkdir(exist_ok=True)
        _atomic_write(part, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]

        # bookkeeping
        self._next_seq += 1
        self._n_parts += 1
        self.done_ids.update(id_list)
        for song_id in id_list:
            self.failed.pop(song_id, None)
        self.failed.update((f.song_id, f) for f in failures)
        return part

    def finalise(self) -> EmbeddingStore:
        """Consolidate consolidated rows and parts into a new generation and commit it.

        Returns
        -------
        EmbeddingStore
            The finished store.
        """
        # rows: the current generation first, then parts in the order written
        ids: list[str] = []
        blocks: list[tuple[np.ndarray, np.ndarray | None]] = []
        if self._meta is not None and self._meta.get("files"):
            ids, vectors, tags = _read_generation(self.path, self._meta)
            blocks.append((vectors, tags))
        failures = {f.song_id: f for f in read_failures(self.path)}
        seen = set(ids)
        for part in _part_files(self.path):
            content = _read_part(part)
            keep = [i for i, song_id in enumerate(content.ids) if song_id not in seen]
            seen.update(content.ids[i] for i in keep)
            ids.extend(content.ids[i] for i in keep)
            blocks.append(
                (
                    content.vectors[keep],
                    None if content.tags is None else content.tags[keep],
                )
            )
            failures.update((f.song_id, f) for f in content.failures)

        # failures that were later embedded are gone
        kept_failures = [f for song_id, f in failures.items() if song_id not in seen]
        created = None if self._meta is None else self._meta.get("created")
        base = _new_meta(self.config, created=created)
        dim = int(self.config.get("dim") or (blocks[0][0].shape[1] if blocks else 0))
        _commit(self.path, base, ids, blocks, dim, kept_failures, old_meta=self._meta)
        self._meta = _read_meta(self.path)
        self._n_parts = 0
        return load_store(self.path)

    def close(self) -> None:
        """Release the folder's lock."""
        self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_config(self) -> None:
        # a store is extended only with vectors made the same way
        if self._meta is None:
            return
        stored = store_config(self._meta)
        differing = config_diff(stored, self.config)
        if differing:
            details = "; ".join(
                f"{key}: store has {_short(stored.get(key))}, "
                f"this run {_short(self.config.get(key))}"
                for key in differing
            )
            raise MismatchError(
                f"store={str(self.path)!r} was made with a different encoder configuration "
                f"(differing keys: {', '.join(differing)}; {details}); give another --out, or "
                "delete that folder to start over"
            )

    def _tidy(self) -> None:
        # temporary files and generations that meta.json does not name are leftovers of a crash
        files = (self._meta or {}).get("files") or {}
        in_use = set(files.values())
        for folder in (self.path, self.path / PARTS_DIR):
            if not folder.is_dir():
                continue
            for file in folder.iterdir():
                stale_gen = (
                    folder == self.path and _GEN_FILE.match(file.name) and file.name not in in_use
                )
                if file.name.endswith(".tmp") or stale_gen:
                    logger.debug("removing leftover %s", file)
                    file.unlink(missing_ok=True)

    def _scan(self) -> None:
        # what is done and what failed, consolidated and in parts
        if self._meta is not None and self._meta.get("files"):
            self.done_ids.update(_read_ids(self.path, self._meta))
        self.failed = {f.song_id: f for f in read_failures(self.path)}
        parts = _part_files(self.path)
        for part in parts:
            content = _read_part(part)
            self.done_ids.update(content.ids)
            self.failed.update((f.song_id, f) for f in content.failures)
        for song_id in self.done_ids:
            self.failed.pop(song_id, None)
        self._n_parts = len(parts)
        self._next_seq = 1 + max((_part_seq(p) for p in parts), default=0)

    def _mark_in_progress(self) -> None:
        meta = _new_meta(self.config, created=None)
        _write_json(self.path / META_FILE, meta)
        self._meta = meta


@dataclass(frozen=True)
class _Part:
    ids: list[str]
    vectors: np.ndarray
    tags: np.ndarray | None
    failures: list[Failure]


class _StoreLock:
    """An exclusive advisory lock on ``<store>/.lock``, released by the OS if the process dies."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self.create = create
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        if self.create:
            self.path.mkdir(parents=True, exist_ok=True)
        file = open(self.path / LOCK_FILE, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "?"
                file.close()
                raise InputError(
                    f"store={str(self.path)!r} is being written by another process (pid={holder}); "
                    "wait for it to finish or give another --out"
                ) from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> _StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _commit(
    path: Path,
    base: dict[str, Any],
    ids: list[str],
    blocks: list[tuple[np.ndarray, np.ndarray | None]],
    dim: int,
    failures: list[Failure],
    *,
    old_meta: dict[str, Any] | None,
) -> None:
    """Write a new generation, failures.csv, then meta.json (the commit), then tidy up."""
    # a generation number no file uses yet
    used = [int(m.group(1)) for f in path.iterdir() if (m := _GEN_FILE.match(f.name))]
    gen = 1 + max(used, default=0)
    has_tags = any(t is not None for _, t in blocks)
    n_tags = len(base.get("tag_names") or []) if has_tags else 0
    if has_tags and any(t is None for v, t in blocks if len(v)):
        raise InputError(
            f"store={str(path)!r} mixes parts with and without tags; delete it and rerun"
        )
    files = {"ids": f"ids-{gen:04d}.json", "vectors": f"vectors-{gen:04d}.npy"}
    if has_tags:
        files["tags"] = f"tags-{gen:04d}.npy"

    # the arrays, copied block by block into memory-mapped temporaries
    n_songs = len(ids)
    _write_json(path / files["ids"], ids)
    _atomic_write_npy(path / files["vectors"], [v for v, _ in blocks], (n_songs, dim))
    if has_tags:
        tag_blocks = [t if t is not None else np.zeros((0, n_tags), np.float32) for _, t in blocks]
        _atomic_write_npy(path / files["tags"], tag_blocks, (n_songs, n_tags))

    # failures.csv, then the commit
    _atomic_write(path / FAILURES_FILE, lambda f: f.write(_failures_csv(failures)))
    vectors = np.load(path / files["vectors"], mmap_mode="r")
    meta = {
        **base,
        "status": "complete",
        "count": n_songs,
        "n_failed": len(failures),
        "files": files,
        "fingerprint": compute_fingerprint(store_config(base), ids, vectors),
    }
    del vectors
    _write_json(path / META_FILE, meta)
    logger.debug("committed store=%s generation=%d with %d songs", path, gen, n_songs)

    # what the new generation replaces
    old_files = set(((old_meta or {}).get("files") or {}).values()) - set(files.values())
    for name in old_files:
        _unlink_quietly(path / name)
    for part in _part_files(path):
        _unlink_quietly(part)
    if (path / PARTS_DIR).is_dir() and not any((path / PARTS_DIR).iterdir()):
        (path / PARTS_DIR).rmdir()


def _read_generation(
    path: Path, meta: dict[str, Any]
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Ids, memory-mapped vectors and tags of the generation ``meta`` names, checked."""
    files = meta.get("files")
    if not files:
        dim = int(meta.get("dim") or 0)
        n_tags = len(meta.get("tag_names") or [])
        return (
            [],
            np.zeros((0, dim), np.float32),
            np.zeros((0, n_tags), np.float32) if n_tags else None,
        )
    try:
        ids = _read_ids(path, meta)
        vectors = np.load(path / files["vectors"], mmap_mode="r")
        tags = np.load(path / files["tags"], mmap_mode="r") if files.get("tags") else None
    except (OSError, ValueError) as exc:
        raise InputError(
            f"store={str(path)!r} is damaged ({exc}); delete it and rerun embed-audio"
        ) from exc
    count = int(meta.get("count", len(ids)))
    shapes_ok = vectors.ndim == 2 and vectors.shape[0] == len(ids) == count
    if not shapes_ok or (tags is not None and tags.shape[0] != count):
        raise InputError(
            f"store={str(path)!r} is damaged: count={count}, ids={len(ids)}, "
            f"vectors.shape={vectors.shape}; delete it and rerun embed-audio"
        )
    return ids, vectors, tags


def _read_ids(path: Path, meta: dict[str, Any]) -> list[str]:
    with open(path / meta["files"]["ids"], encoding="utf-8") as f:
        ids: list[str] = json.load(f)
    return ids


def _read_meta(path: Path) -> dict[str, Any] | None:
    file = path / META_FILE
    if not file.is_file():
        return None
    try:
        with open(file, encoding="utf-8") as f:
            meta: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"store={str(path)!r} has an unreadable {META_FILE}: {exc}") from exc
    if meta.get("format") != STORE_FORMAT:
        raise InputError(
            f"store={str(path)!r} is not an embedding store: format={meta.get('format')!r}, "
            f"expected {STORE_FORMAT!r}"
        )
    if int(meta.get("format_version", 0)) > STORE_FORMAT_VERSION:
        raise InputError(
            f"store={str(path)!r} has format_version={meta.get('format_version')}, newer than "
            f"this package reads ({STORE_FORMAT_VERSION}); upgrade encore"
        )
    return meta


def _read_part(part: Path) -> _Part:
    with np.load(part, allow_pickle=False) as data:
        records = json.loads(data["records"].tobytes().decode())
        vectors = np.asarray(data["vectors"], dtype=np.float32)
        tags = np.asarray(data["tags"], dtype=np.float32) if "tags" in data.files else None
    failures = [Failure(*row) for row in records["failures"]]
    return _Part(list(records["ids"]), vectors, tags, failures)


def _part_files(path: Path) -> list[Path]:
    folder = path / PARTS_DIR
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _PART_FILE.match(p.name)), key=_part_seq)


def _part_seq(part: Path) -> int:
    match = _PART_FILE.match(part.name)
    return int(match.group(1)) if match else 0


def _new_meta(config: dict[str, Any], *, created: str | None) -> dict[str, Any]:
    now = _now()
    return {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "status": "in_progress",
        **config,
        "count": 0,
        "n_failed": 0,
        "files": None,
        "package_version": _package_version(),
        "created": created or now,
        "updated": now,
    }


def _check_store_folder(path: Path) -> None:
    # refuse to write into a folder that holds something else
    ours = {META_FILE, FAILURES_FILE, PARTS_DIR, LOCK_FILE}
    foreign = [
        f.name
        for f in path.iterdir()
        if f.name not in ours and not _GEN_FILE.match(f.name) and not f.name.endswith(".tmp")
    ]
    if foreign and not (path / META_FILE).exists():
        raise InputError(
            f"out={str(path)!r} is neither empty nor an embedding store (it holds "
            f"{', '.join(sorted(foreign)[:3])}); give an empty or new folder"
        )


def _check_unique(ids: list[str]) -> None:
    if len(set(ids)) != len(ids):
        repeated = sorted(song_id for song_id, n in Counter(ids).items() if n > 1)
        raise InputError(f"song ids must be unique; repeated: {repeated[:5]}")


def _incomplete_error(path: Path, n_done: int, n_parts: int) -> InputError:
    return InputError(
        f"store={str(path)!r} is incomplete (status=in_progress: {n_done} songs consolidated, "
        f"{n_parts} parts pending); rerun embed-audio with the same --out to finish it, or pass "
        "allow_partial=True to read what is there"
    )


def _normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip, so tuples and lists (and numpy scalars) compare equal."""
    normalised: dict[str, Any] = json.loads(json.dumps(config, default=_json_default))
    return normalised


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable: {value!r}")


def _failures_csv(failures: list[Failure]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(FAILURE_COLUMNS)
    writer.writerows((f.path, f.song_id, f.reason) for f in failures)
    return buffer.getvalue().encode("utf-8")


def _write_json(file: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, ensure_ascii=False, default=_json_default)
    _atomic_write(file, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(file: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temporary name, fsync, then move into place and fsync the folder."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(file.parent)


def _atomic_write_npy(file: Path, blocks: list[np.ndarray], shape: tuple[int, int]) -> None:
    """Fill a memory-mapped ``.npy`` from ``blocks`` a chunk at a time, then move it into place."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        row = 0
        for block in blocks:
            step = max(1, _HASH_CHUNK_BYTES // max(1, shape[1] * 4))
            for start in range(0, len(block), step):
                chunk = np.asarray(block[start : start + step], dtype=np.float32)
                out[row : row + len(chunk)] = chunk
                row += len(chunk)
        assert row == shape[0], f"wrote {row} rows, expected {shape[0]}"
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(file.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _unlink_quietly(file: Path) -> None:
    try:
        file.unlink(missing_ok=True)
    except OSError as exc:  # pragma: no cover - e.g. a file still mapped on Windows
        logger.debug("could not remove %s: %s", file, exc)


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _package_version() -> str:
    try:
        return metadata.version("encore")
    except metadata.PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
