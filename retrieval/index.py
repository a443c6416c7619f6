"""Cosine nearest-neighbour search over song vectors with FAISS.

Cosine similarity is computed as the inner product of L2-normalised vectors: :func:`build_index`
normalises the songs as it adds them and :meth:`SongIndex.search` normalises the queries, so
callers pass raw vectors. Four kinds of index are offered:

``flat``
    Exact search (``IndexFlatIP``): every query is compared with every song.
``hnsw``
    Approximate graph search (``IndexHNSWFlat``); parameters ``hnsw_m`` (graph degree),
    ``ef_construction`` and ``ef_search`` (candidate list sizes when building and searching).
``ivf``
    Approximate inverted-file search (``IndexIVFFlat``): songs are bucketed around ``nlist``
    k-means centroids and a query scans the ``nprobe`` nearest buckets with exact vectors.
``ivf_sq8``
    The same inverted file holding each song as 8-bit codes, one byte per dimension
    (``IndexIVFScalarQuantizer``): a quarter of the memory and faster scans, with scores that
    are cosines up to the quantisation error (at most 0.0013, mean 0.0002, on 40,000 of the
    benchmark generator's 1024-dim vectors).

``auto`` picks ``flat`` up to :data:`AUTO_FLAT_MAX` songs and :data:`AUTO_APPROX_KIND` above.
``scripts/bench_retrieval.py`` made that choice on 420,000 synthetic songs of 1024 dims (1,000
queries in one batch, k=100, a shared two-core machine): with the default ``nlist=2048`` and
``nprobe=32``, ``ivf_sq8`` kept recall@100 at 0.967 while answering 11 times as many queries per
second as exact search, in a 421 MiB index (exact: 1,641 MiB). ``ivf`` with full vectors needed
``nprobe=16`` for recall 0.950 at 9.7 times exact per CPU-second, and HNSW (``hnsw_m=32``) took
7 minutes to build and reached recall 0.952 at 6.5 times exact per CPU-second. The README has
the table.

Excluding already-played songs is done by over-fetching and filtering: a query with ``e``
excluded rows asks FAISS for ``k + e`` neighbours, which always leaves ``k`` results after the
excluded ones are dropped (for exact search; an approximate index may return fewer, see
:meth:`SongIndex.search`). Queries are grouped by the size of their exclusion so one heavy user
does not make every query fetch more.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from embedding.errors import InputError, MismatchError
from embedding.store import EmbeddingStore, load_store

from ._log import logger

KINDS = ("auto", "flat", "hnsw", "ivf", "ivf_sq8")
# kinds built on an inverted file; they share their parameters
IVF_KINDS = ("ivf", "ivf_sq8")
# below this many songs auto builds an exact index; exact search of 1,000 queries over 50 k
# songs of 1024 dims took 1.6 s (641 q/s) in scripts/bench_retrieval.py on two shared cores
AUTO_FLAT_MAX = 50_000
# the approximate kind auto picks above AUTO_FLAT_MAX (chosen by scripts/bench_retrieval.py)
AUTO_APPROX_KIND = "ivf_sq8"
PARAM_NAMES = {
    "flat": (),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
    "ivf": ("nlist", "nprobe", "train_size"),
    "ivf_sq8": ("nlist", "nprobe", "train_size"),
}
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
META_FILE = "meta.json"
FORMAT_VERSION = 1
# what the scores mean, written to meta.json and checked on load
METRIC = "cosine: L2-normalised inner product"
# rows normalised and handed to FAISS per step when adding and searching
ADD_CHUNK_ROWS = 32_768
SEARCH_CHUNK_ROWS = 8_192

Exclude: TypeAlias = Sequence[Collection[int] | np.ndarray | None] | sp.spmatrix | sp.sparray


def set_threads(threads: int | None) -> None:
    """Set the number of OpenMP threads FAISS uses; ``None`` leaves the current setting.

    Parameters
    ----------
    threads : int or None
        Thread count, at least 1.

    Raises
    ------
    InputError
        If ``threads`` < 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"threads must be >= 1; got threads={threads}")
    faiss.omp_set_num_threads(int(threads))


def default_params(kind: str, n: int) -> dict[str, int]:
    """Parameters for an index of ``kind`` over ``n`` songs, sized from ``n``.

    HNSW: ``hnsw_m=32``, ``ef_construction=80``, ``ef_search=256``. IVF (both kinds): ``nlist``
    about ``4 * sqrt(n)`` (a power of two, at most ``n / 39`` so k-means has enough points per
    centroid), ``nprobe = nlist / 64`` (at least 8, at most ``nlist``), k-means trained on at most
    ``64 * nlist`` songs. The query-time values are the cheapest that kept recall@100 above 0.95
    with some margin in ``scripts/bench_retrieval.py`` at 420 k songs (``nprobe=32`` of 2048
    lists, ``ef_search=256``).

    Parameters
    ----------
    kind : str
        ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``"ivf_sq8"``.
    n : int
        Number of songs the index will hold.

    Returns
    -------
    dict[str, int]
        Parameter name to value.

    Raises
    ------
    InputError
        If ``kind`` is not a concrete kind.
    """
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return {"hnsw_m": 32, "ef_construction": 80, "ef_search": 256}
    if kind in IVF_KINDS:
        # power of two near 4 sqrt(n), capped so each centroid trains on >= 39 points
        target = 4.0 * math.sqrt(max(n, 1))
        nlist = 2 ** max(0, round(math.log2(target)))
        nlist = max(1, min(nlist, n // 39))
        nprobe = min(nlist, max(8, nlist // 64))
        return {"nlist": nlist, "nprobe": nprobe, "train_size": min(n, 64 * nlist)}
    raise InputError(f"kind must be one of flat, hnsw, ivf, ivf_sq8; got kind={kind!r}")


def _resolve_params(
    kind: str, n: int, params: dict[str, int | None] | dict[str, int] | None
) -> dict[str, int]:
    """Defaults for ``kind`` overridden by ``params``, with unknown or bad values refused."""
    merged = default_params(kind, n)
    for name, value in (params or {}).items():
        if value is None:
            continue
        if name not in PARAM_NAMES[kind]:
            raise InputError(
                f"parameter {name}={value} does not apply to kind={kind!r}; "
                f"it takes {', '.join(PARAM_NAMES[kind]) or 'no parameters'}"
            )
        if int(value) < 1:
            raise InputError(f"parameter {name} must be >= 1; got {name}={value}")
        merged[name] = int(value)

    # an IVF index needs at least one training point per list
    if kind in IVF_KINDS:
        if merged["nlist"] > n:
            raise InputError(
                f"nlist={merged['nlist']} exceeds the number of songs n={n}; "
                "lower --nlist or leave it to the default"
            )
        merged["nprobe"] = min(merged["nprobe"], merged["nlist"])
        merged["train_size"] = min(n, max(merged["train_size"], merged["nlist"]))
    return merged


def _apply_search_params(index: faiss.Index, kind: str, params: dict[str, int]) -> None:
    """Set the query-time parameters that FAISS keeps on the index object."""
    if kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]  # type: ignore[attr-defined]
    elif kind in IVF_KINDS:
        index.nprobe = params["nprobe"]  # type: ignore[attr-defined]


def _normalized_chunk(vectors: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` as a contiguous float32 copy with unit rows, refusing non-finite."""
    chunk = np.array(vectors[start:stop], dtype=np.float32, order="C", copy=True)
    if not np.isfinite(chunk).all():
        bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
        raise InputError(f"vectors must be finite; row {bad} holds NaN or infinity")
    faiss.normalize_L2(chunk)
    return chunk


@dataclass
class SongIndex:
    """A FAISS cosine index over songs, with the song ids of its rows.

    Attributes
    ----------
    index : faiss.Index
        Inner-product index over L2-normalised song vectors.
    ids : list[str]
        Song id of each row.
    kind : str
        ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``"ivf_sq8"``.
    params : dict[str, int]
        The parameters the index was built and is searched with.
    store_fingerprint : str or None
        Fingerprint of the embedding store the vectors came from, when known.
    store_path : str or None
        Absolute path of that store, when known; :meth:`open_store` reads it.
    encoder : str or None
        Name of the encoder that made the store's vectors, when known.
    """

    index: Any
    ids: list[str]
    kind: str
    params: dict[str, int]
    store_fingerprint: str | None = None
    store_path: str | None = None
    encoder: str | None = None
    _row_of: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._row_of = {song_id: row for row, song_id in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.index.d)

    @property
    def n(self) -> int:
        """Number of songs indexed."""
        return int(self.index.ntotal)

    def row_of(self, song_id: str) -> int:
        """Row of ``song_id``; raises :class:`KeyError` when it is not indexed."""
        return self._row_of[song_id]

    def ids_of(self, rows: np.ndarray) -> list[list[str]]:
        """Song ids of a ``(n_queries, k)`` array of rows, leaving out the ``-1`` padding."""
        return [[self.ids[r] for r in row if r >= 0] for row in np.asarray(rows)]

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change the query-time parameters (``ef_search`` for HNSW, ``nprobe`` for IVF).

        Parameters
        ----------
        ef_search : int or None, optional (default=None)
            HNSW candidate list size; higher is slower and more exact.
        nprobe : int or None, optional (default=None)
            IVF lists scanned per query; higher is slower and more exact.

        Raises
        ------
        InputError
            If a parameter does not apply to this kind or is < 1.
        """
        merged: dict[str, int | None] = {**self.params, "ef_search": ef_search, "nprobe": nprobe}
        self.params = _resolve_params(self.kind, self.n, merged)
        _apply_search_params(self.index, self.kind, self.params)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Exclude | None = None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` songs most cosine-similar to each query.

        Parameters
        ----------
        queries : np.ndarray [shape=(n_queries, dim)] or [shape=(dim,)]
            Query vectors, not necessarily normalised. All queries go in one call; they are
            handed to FAISS in chunks of 8,192.
        k : int
            Neighbours per query.
        exclude : sequence or sparse matrix, optional (default=None)
            Rows never to return, per query: a sequence of ``n_queries`` collections of rows (or
            ``None``), or a sparse ``(n_queries, n)`` matrix whose non-zeros are the excluded
            rows (e.g. a user x song play matrix). Out-of-range rows are ignored.
        threads : int or None, optional (default=None)
            FAISS threads for this and later calls; ``None`` keeps the current setting.

        Returns
        -------
        scores : np.ndarray [shape=(n_queries, k)], float32
            Cosine similarities, best first (approximate for ``ivf_sq8``, see the module
            docstring); ``-inf`` in padding slots.
        rows : np.ndarray [shape=(n_queries, k)], int64
            Rows into :attr:`ids`; ``-1`` pads the end when fewer than ``k`` songs remain (``k``
            larger than the unexcluded songs, or an approximate index that found fewer).

        Raises
        ------
        InputError
            If the query dimension differs from the index, ``k`` < 1, a query is not finite, or
            ``exclude`` does not have one entry per query.
        """
        # validate the queries
        set_threads(threads)
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(
                f"queries must have shape (n_queries, {self.dim}) to match the index; got "
                f"shape={queries.shape}"
            )
        if k < 1:
            raise InputError(f"k must be >= 1; got k={k}")
        n_queries = len(queries)

        # exclusion as sorted (query * n + row) keys, and the number excluded per query
        excl_keys, n_excl = self._exclusion_keys(exclude, n_queries)

        # group queries by how many extra neighbours they need (powers of two)
        extra = np.where(n_excl > 0, 2 ** np.ceil(np.log2(np.maximum(n_excl, 1))), 0)
        fetch_all = np.minimum(self.n, k + extra.astype(np.int64))
        scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        rows = np.full((n_queries, k), -1, dtype=np.int64)

        # search each group in chunks and keep the first k unexcluded results
        for fetch in np.unique(fetch_all):
            members = np.flatnonzero(fetch_all == fetch)
            for start in range(0, len(members), SEARCH_CHUNK_ROWS):
                sel = members[start : start + SEARCH_CHUNK_ROWS]
                q = np.ascontiguousarray(queries[sel], dtype=np.float32)
                if not np.isfinite(q).all():
                    raise InputError("queries must be finite; a query holds NaN or infinity")
                q = q.copy()
                faiss.normalize_L2(q)
                got_scores, got_rows = self._raw_search(q, int(fetch))
                drop = got_rows < 0
                if excl_keys.size:
                    keys = sel[:, None].astype(np.int64) * self.n + got_rows
                    drop |= np.isin(keys, excl_keys)
                order = np.argsort(drop, axis=1, kind="stable")[:, :k]
                taken = min(k, got_rows.shape[1])
                kept_rows = np.take_along_axis(got_rows, order, axis=1)
                kept_scores = np.take_along_axis(got_scores, order, axis=1)
                kept_drop = np.take_along_axis(drop, order, axis=1)
                rows[sel, :taken] = np.where(kept_drop, -1, kept_rows)
                scores[sel, :taken] = np.where(kept_drop, -np.inf, kept_scores)
        return scores, rows

    def _raw_search(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS call; HNSW widens its candidate list so it can return ``fetch`` results."""
        if self.kind == "hnsw" and fetch > self.params["ef_search"]:
            search_params = faiss.SearchParametersHNSW(efSearch=fetch)  # type: ignore[attr-defined]
            got_scores, got_rows = self.index.search(q, fetch, params=search_params)
        else:
            got_scores, got_rows = self.index.search(q, fetch)
        return got_scores, got_rows.astype(np.int64, copy=False)

    def _exclusion_keys(
        self, exclude: Exclude | None, n_queries: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted ``query * n + row`` keys of excluded pairs and the count per query."""
        if exclude is None:
            return np.empty(0, dtype=np.int64), np.zeros(n_queries, dtype=np.int64)

        # sparse matrix: its non-zeros are the excluded pairs
        if sp.issparse(exclude):
            coo = sp.coo_matrix(exclude)
            if coo.shape[0] != n_queries:
                raise InputError(
                    f"exclude must have one row per query; got exclude.shape={coo.shape} for "
                    f"n_queries={n_queries}"
                )
            q_of, r_of = coo.row.astype(np.int64), coo.col.astype(np.int64)
        else:
            if len(exclude) != n_queries:
                raise InputError(
                    f"exclude must have one entry per query; got len(exclude)={len(exclude)} "
                    f"for n_queries={n_queries}"
                )
            parts = [np.fromiter(e, dtype=np.int64) if e is not None else None for e in exclude]
            sizes = np.array([0 if p is None else len(p) for p in parts], dtype=np.int64)
            q_of = np.repeat(np.arange(n_queries, dtype=np.int64), sizes)
            filled = [p for p in parts if p is not None and len(p)]
            r_of = np.concatenate(filled) if filled else np.empty(0, dtype=np.int64)

        # drop out-of-range rows and duplicates, then count per query
        ok = (r_of >= 0) & (r_of < self.n)
        keys = np.unique(q_of[ok] * self.n + r_of[ok])
        counts = np.bincount(keys // max(self.n, 1), minlength=n_queries).astype(np.int64)
        return keys, counts

    def meta(self) -> dict[str, Any]:
        """The content :meth:`save` writes to ``meta.json`` (see :func:`read_meta`)."""
        return {
            "format_version": FORMAT_VERSION,
            "metric": METRIC,
            "kind": self.kind,
            "params": dict(self.params),
            "n_songs": self.n,
            "dim": self.dim,
            "store_fingerprint": self.store_fingerprint,
            "store_path": self.store_path,
            "encoder": self.encoder,
            "ids_file": IDS_FILE,
            "index_file": INDEX_FILE,
            "faiss_version": faiss.__version__,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss``, ``ids.json`` and ``meta.json`` into ``directory``.

        ``ids.json`` maps rows back to song ids (a JSON list in row order); ``meta.json`` holds
        :meth:`meta`.

        Parameters
        ----------
        directory : str or Path
            Created if missing; existing files of the same names are replaced.

        Returns
        -------
        Path
            The directory.
        """
        # the three files, index last so a partial write cannot look complete
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / IDS_FILE).write_text(json.dumps(self.ids), encoding="utf-8")
        (out / META_FILE).write_text(json.dumps(self.meta(), indent=2) + "\n", encoding="utf-8")
        faiss.write_index(self.index, str(out / INDEX_FILE))
        logger.info("saved %s index of %d songs (dim=%d) to %s", self.kind, self.n, self.dim, out)
        return out

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        store: EmbeddingStore | None = None,
        expect_fingerprint: str | None = None,
        expect_dim: int | None = None,
        threads: int | None = None,
    ) -> SongIndex:
        """Read an index written by :meth:`save`, checking it fits the caller's vectors.

        Parameters
        ----------
        directory : str or Path
            Folder holding ``index.faiss``, ``ids.json`` and ``meta.json``.
        store : EmbeddingStore or None, optional (default=None)
            The embedding store the caller uses; its fingerprint, dimension and song ids must be
            the index's. Shorthand for ``expect_fingerprint`` and ``expect_dim`` plus the id
            check.
        expect_fingerprint : str or None, optional (default=None)
            Fingerprint of the embedding store the caller uses; checked when given.
        expect_dim : int or None, optional (default=None)
            Dimension of the caller's query vectors; checked when given.
        threads : int or None, optional (default=None)
            FAISS threads; ``None`` keeps the current setting.

        Returns
        -------
        SongIndex

        Raises
        ------
        InputError
            If a file is missing or unreadable.
        MismatchError
            If the fingerprint, dimension or song ids differ from the expected ones, or the
            files disagree with each other.

        Examples
        --------
        >>> store = load_store("songs-musicnn")  # doctest: +SKIP
        >>> index = SongIndex.load("songs-musicnn-index", store=store)  # doctest: +SKIP
        >>> scores, rows = index.search(store.vectors[:5], 10)  # doctest: +SKIP
        """
        # read the metadata and ids
        set_threads(threads)
        folder = Path(directory)
        meta = read_meta(folder)
        try:
            ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(
                f"index directory={folder} lacks {IDS_FILE}; "
                f"build it with `build-index STORE --out {folder}`"
            ) from None
        except json.JSONDecodeError as err:
            raise InputError(
                f"index directory={folder} holds unreadable {IDS_FILE}: {err}"
            ) from err
        if not (folder / INDEX_FILE).is_file():
            raise InputError(
                f"index directory={folder} lacks {INDEX_FILE}; "
                f"build it with `build-index STORE --out {folder}`"
            )
        source = store.path if store is not None else meta.get("store_path") or "STORE"
        rebuild = f"rebuild it with `build-index {source} --out {folder}`"

        # check the metadata against what the caller expects before reading the index
        if store is not None:
            if expect_fingerprint is None:
                expect_fingerprint = store.fingerprint
            if expect_dim is None:
                expect_dim = store.dim
        if meta.get("metric") != METRIC:
            raise MismatchError(
                f"index at {folder} has metric={meta.get('metric')!r}; expected {METRIC!r}; "
                f"{rebuild}"
            )
        if expect_fingerprint is not None and meta.get("store_fingerprint") != expect_fingerprint:
            raise MismatchError(
                f"index at {folder} was built from store fingerprint="
                f"{meta.get('store_fingerprint')!r} (store_path={meta.get('store_path')!r}) but "
                f"the store in use has fingerprint={expect_fingerprint!r}; {rebuild}"
            )
        if expect_dim is not None and meta.get("dim") != expect_dim:
            raise MismatchError(
                f"index at {folder} has dim={meta.get('dim')} but the vectors in use have "
                f"dim={expect_dim}; {rebuild}"
            )
        if store is not None and [str(i) for i in ids] != store.ids:
            raise MismatchError(
                f"index at {folder} holds n_songs={len(ids)} ids that are not the rows of "
                f"store={str(store.path)!r} (n_songs={len(store)}); {rebuild}"
            )

        # read the index and check the files agree
        index = faiss.read_index(str(folder / INDEX_FILE))
        n_meta = meta.get("n_songs")
        if index.ntotal != len(ids) or index.ntotal != n_meta or index.d != meta.get("dim"):
            raise MismatchError(
                f"index at {folder} is inconsistent: {INDEX_FILE} has n_songs={index.ntotal}, "
                f"dim={index.d}; {IDS_FILE} has n_songs={len(ids)}; {META_FILE} has "
                f"n_songs={n_meta}, dim={meta.get('dim')}; {rebuild}"
            )
        song_index = cls(
            index=index,
            ids=[str(i) for i in ids],
            kind=str(meta["kind"]),
            params={str(k): int(v) for k, v in meta.get("params", {}).items()},
            store_fingerprint=meta.get("store_fingerprint"),
            store_path=meta.get("store_path"),
            encoder=meta.get("encoder"),
        )
        _apply_search_params(index, song_index.kind, song_index.params)
        logger.debug("loaded %s index of %d songs from %s", song_index.kind, song_index.n, folder)
        return song_index

    def open_store(self) -> EmbeddingStore:
        """The embedding store this index was built from, checked against the index.

        Row ``r`` of the index is row ``r`` of the store, so ``store.vectors[rows]`` are the
        vectors of the songs a search returned.

        Returns
        -------
        EmbeddingStore
            Read from :attr:`store_path` with :func:`embedding.load_store`.

        Raises
        ------
        InputError
            If the index does not know its store, or the store folder is missing.
        MismatchError
            If the store there now holds other vectors (fingerprint, dimension or ids differ).
        """
        # the recorded path, read like any store
        if self.store_path is None:
            raise InputError(
                "this index has store_path=None (it was not built from a store); pass the store "
                "explicitly or rebuild with `build-index STORE --out DIR`"
            )
        store = load_store(self.store_path)

        # the same checks as load(store=...)
        rebuild = f"rebuild the index with `build-index {self.store_path} --out DIR`"
        if self.store_fingerprint is not None and store.fingerprint != self.store_fingerprint:
            raise MismatchError(
                f"store at store_path={self.store_path!r} now has fingerprint="
                f"{store.fingerprint!r} but the index was built from fingerprint="
                f"{self.store_fingerprint!r}; {rebuild}"
            )
        if store.dim != self.dim or store.ids != self.ids:
            raise MismatchError(
                f"store at store_path={self.store_path!r} has n_songs={len(store)}, "
                f"dim={store.dim} but the index has n_songs={self.n}, dim={self.dim} (or other "
                f"ids); {rebuild}"
            )
        return store


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of an index folder, without reading the index itself.

    Keys: ``format_version``, ``metric``, ``kind``, ``params``, ``n_songs``, ``dim``,
    ``store_fingerprint``, ``store_path``, ``encoder``, ``ids_file``, ``index_file``,
    ``faiss_version``.

    Parameters
    ----------
    directory : str or Path
        The index folder.

    Returns
    -------
    dict

    Raises
    ------
    InputError
        If the folder or its ``meta.json`` is missing or unreadable.
    """
    folder = Path(directory)
    path = folder / META_FILE
    if not path.is_file():
        what = "does not exist" if not folder.is_dir() else f"lacks {META_FILE}"
        raise InputError(
            f"index directory={folder} {what}; build it with `build-index STORE --out {folder}`"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"index directory={folder} holds unreadable {META_FILE}: {err}") from err
    if not isinstance(meta, dict):
        raise InputError(f"{path} must hold a JSON object; got {type(meta).__name__}")
    return meta


def build_index_from_store(
    store: EmbeddingStore,
    *,
    kind: str = "auto",
    params: dict[str, int] | None = None,
    threads: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> SongIndex:
    """Build a cosine index over every song of an embedding store, recording where it came from.

    The index keeps the store's fingerprint, absolute path and encoder name, so
    :meth:`SongIndex.load` can refuse another store and :meth:`SongIndex.open_store` can find
    this one. Row ``r`` of the index is row ``r`` of the store.

    Parameters
    ----------
    store : EmbeddingStore
        From :func:`embedding.load_store`.
    kind, params, threads, seed, show_progress
        As for :func:`build_index`.

    Returns
    -------
    SongIndex

    Raises
    ------
    InputError
        As for :func:`build_index` (an empty store, a bad kind or parameter).

    Examples
    --------
    >>> store = load_store("songs-musicnn")  # doctest: +SKIP
    >>> build_index_from_store(store, kind="flat").save("songs-musicnn-index")  # doctest: +SKIP
    """
    index = build_index(
        store.vectors,
        store.ids,
        kind=kind,
        params=params,
        store_fingerprint=store.fingerprint,
        threads=threads,
        seed=seed,
        show_progress=show_progress,
    )
    index.store_path = str(Path(store.path).resolve())
    encoder = store.meta.get("encoder")
    index.encoder = None if encoder is None else str(encoder)
    return index


def build_index(
    vectors: np.ndarray,
    ids: Sequence[str],
    *,
    kind: str = "auto",
    params: dict[str, int] | None = None,
    store_fingerprint: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> SongIndex:
    """Build a cosine index over song vectors.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n_songs, dim)]
        Song vectors, not necessarily normalised; a memmap is read in chunks, so the index
        (about ``n_songs * dim * 4`` bytes) is the only full-size copy made.
    ids : sequence of str
        Song id of each row; unique.
    kind : str, optional (default="auto")
        ``"flat"``, ``"hnsw"``, ``"ivf"``, or ``"auto"``: ``flat`` up to
        :data:`AUTO_FLAT_MAX` songs, :data:`AUTO_APPROX_KIND` above.
    params : dict[str, int] or None, optional (default=None)
        Overrides of :func:`default_params` for the chosen kind; ``None`` values are ignored.
    store_fingerprint : str or None, optional (default=None)
        Fingerprint of the source store, saved so :meth:`SongIndex.load` can check it.
    threads : int or None, optional (default=None)
        FAISS threads; ``None`` keeps the current setting.
    seed : int, optional (default=0)
        Seed of the IVF training sample and k-means.
    show_progress : bool, optional (default=True)
        Show a progress bar while adding songs.

    Returns
    -------
    SongIndex

    Raises
    ------
    InputError
        If ``vectors`` is not 2-d with at least one row, ``ids`` has another length or repeats
        an id, a vector is not finite, ``kind`` is unknown, or a parameter is invalid.

    Examples
    --------
    >>> vecs = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    >>> index = build_index(vecs, [f"s{i}" for i in range(100)], show_progress=False)
    >>> scores, rows = index.search(vecs[:2], 3)
    >>> rows[:, 0].tolist()
    [0, 1]
    """
    # validate the inputs
    set_threads(threads)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise InputError(
            f"vectors must be 2-d (n_songs, dim) with at least one song; got shape={vectors.shape}"
        )
    n, dim = vectors.shape
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise InputError(f"ids must have one entry per vector; got len(ids)={len(ids)}, n={n}")
    if len(set(ids)) != n:
        raise InputError(f"ids must be unique; got {n - len(set(ids))} repeated id(s)")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}; got kind={kind!r}")
    if kind == "auto":
        kind = "flat" if n <= AUTO_FLAT_MAX else AUTO_APPROX_KIND
    resolved = _resolve_params(kind, n, params)
    started = time.perf_counter()

    # create the empty index
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, resolved["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = resolved["ef_construction"]
    else:
        quantizer = faiss.IndexFlatIP(dim)
        nlist, ip = resolved["nlist"], faiss.METRIC_INNER_PRODUCT
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
        else:
            # one byte per dimension, ranges fitted per dimension; codes of the vectors
            # themselves (not of their residuals) so a code is decoded without its list
            sq8 = faiss.ScalarQuantizer.QT_8bit
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, sq8, ip, False)
        index.cp.seed = seed
        index.cp.spherical = True
        _train_ivf(index, vectors, resolved["train_size"], seed)
    _apply_search_params(index, kind, resolved)

    # add the normalised songs chunk by chunk
    starts = range(0, n, ADD_CHUNK_ROWS)
    for start in tqdm(starts, desc=f"adding to {kind}", unit="chunk", disable=not show_progress):
        index.add(_normalized_chunk(vectors, start, min(n, start + ADD_CHUNK_ROWS)))

    logger.info(
        "built %s index of %d songs (dim=%d, %s) in %.1f s",
        kind,
        n,
        dim,
        ", ".join(f"{k}={v}" for k, v in resolved.items()) or "exact",
        time.perf_counter() - started,
    )
    return SongIndex(
        index=index, ids=ids, kind=kind, params=resolved, store_fingerprint=store_fingerprint
    )


def _train_ivf(index: Any, vectors: np.ndarray, train_size: int, seed: int) -> None:
    """Train the IVF centroids with k-means on a seeded sample of normalised songs."""
    n = vectors.shape[0]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=train_size, replace=False))
    train = np.array(vectors[sample], dtype=np.float32, order="C", copy=True)
    if not np.isfinite(train).all():
        raise InputError("vectors must be finite; the IVF training sample holds NaN or infinity")
    faiss.normalize_L2(train)
    started = time.perf_counter()
    index.train(train)
    logger.debug(
        "trained %d IVF lists on %d songs in %.1f s",
        index.nlist,
        train_size,
        time.perf_counter() - started,
    )
