"""Speed and recall of the song indexes on synthetic song vectors, printed as Markdown tables.

The songs and queries come from one fixed generator (:func:`make_vectors`, seeded): ``--n-clusters``
Gaussian cluster centres in a random ``--rank``-dimensional subspace of the ``--dim``-dimensional
space, each song a centre plus Gaussian spread (``--spread``) inside that subspace plus isotropic
noise (``--noise``) in all dimensions. The spread is wide enough that a query's exact top-100
reaches into several neighbouring clusters; the script measures and prints how many. Queries are
drawn the same way from the same centres but are not indexed.

For each kind (``--kinds``) it reports the build time, the index's size (its serialised FAISS
bytes, which is what it holds in memory) and the growth of the resident set while building (an
upper bound that includes freed scratch memory, or less when memory freed earlier was reused),
queries per second with all queries in one batched search call (wall clock, and per CPU-second)
and recall@k against exact search. Exact search is timed first and again last, since the load of
a shared machine drifts; speed-ups are taken against the faster of the two, by wall clock and
per CPU-second separately. The approximate kinds are swept over ``nprobe`` / ``ef_search``, and
the setting with the highest speed-up per CPU-second that reaches ``--target-recall`` is printed
as the operating point.
``--hnsw-max-songs`` builds the HNSW graph on the first songs only when a full build would take
too long; its recall and speed-up are then measured against exact search over the same subset.

An optional section (``--model DIR --users N``) times recommendations of a trained model through
``ranking.recommend.Recommender``.

    .venv/bin/python scripts/bench_retrieval.py                       # 420 k x 1024, minutes
    .venv/bin/python scripts/bench_retrieval.py --n-songs 20000 --dim 128 --n-queries 200
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedding.errors import EncoreError  # noqa: E402
from retrieval.index import SongIndex, build_index, default_params, set_threads  # noqa: E402

# rows drawn per step by the generator, so only one chunk of noise is alive at a time
GEN_CHUNK_ROWS = 32_768


@dataclass
class Row:
    """One line of the results table."""

    kind: str
    setting: str
    build_s: float
    size_mib: float
    rss_mib: float
    qps: float
    q_per_cpu_s: float
    recall: float
    # which exact search it is compared with: "all" songs or a subset
    scope: str = "all"


def rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def make_vectors(
    n: int,
    *,
    dim: int,
    n_clusters: int,
    rank: int,
    spread: float,
    noise: float,
    seed: int,
    stream: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` vectors and their cluster labels from the benchmark's generator.

    The centres and the subspace depend on ``seed`` only; ``stream`` selects an independent
    sequence of draws from them (songs and queries use different streams).

    Parameters
    ----------
    n : int
        Vectors to draw.
    dim : int
        Dimension of the vectors.
    n_clusters : int
        Number of Gaussian cluster centres.
    rank : int
        Dimension of the subspace holding the centres and the within-cluster spread.
    spread : float
        Standard deviation of the within-cluster spread per subspace coordinate (the centres
        have 1).
    noise : float
        Standard deviation of the isotropic noise per coordinate of the full space.
    seed : int
        Seed of the centres and subspace.
    stream : int
        Seed offset of the draws.

    Returns
    -------
    vectors : np.ndarray [shape=(n, dim)], float32
        Not normalised (the index normalises).
    labels : np.ndarray [shape=(n,)], int64
        Cluster of each vector.
    """
    # centres and subspace, fixed by the seed
    base = np.random.default_rng(seed)
    basis = np.linalg.qr(base.standard_normal((dim, rank)))[0].T.astype(np.float32)  # (rank, dim)
    centres = base.standard_normal((n_clusters, rank)).astype(np.float32)

    # draws chunk by chunk into one preallocated array
    rng = np.random.default_rng([seed, stream])
    labels = rng.integers(n_clusters, size=n)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, GEN_CHUNK_ROWS):
        stop = min(n, start + GEN_CHUNK_ROWS)
        latent = centres[labels[start:stop]]
        latent += spread * rng.standard_normal((stop - start, rank), dtype=np.float32)
        chunk = latent @ basis  # (rows, dim)
        chunk += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        vectors[start:stop] = chunk
    return vectors, labels


def timed_search(
    index: SongIndex, queries: np.ndarray, k: int, *, repeats: int
) -> tuple[float, float, np.ndarray]:
    """Best wall seconds of one batched search over ``repeats`` runs, its CPU seconds and rows."""
    best_wall, best_cpu, rows = float("inf"), float("inf"), np.empty(0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        _, got = index.search(queries, k)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best_wall:
            best_wall, best_cpu, rows = wall, cpu, got
    return best_wall, best_cpu, rows


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the approximate search returned."""
    hits = [len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / exact.shape[1]


def serialised_mib(index: SongIndex) -> float:
    """Size of the FAISS index as :meth:`SongIndex.save` writes it, counted without a copy."""
    n_bytes = 0

    def count(chunk: bytes) -> int:
        nonlocal n_bytes
        n_bytes += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)  # type: ignore[attr-defined]
    faiss.write_index(index.index, writer)
    del writer
    return n_bytes / 2**20


def timed_build(build: Callable[[], SongIndex]) -> tuple[SongIndex, float, float, float]:
    """An index, its build seconds, its serialised size and the growth of the resident set."""
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - started
    return index, seconds, serialised_mib(index), rss_mib() - before


def bench_exact(
    vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int, repeats: int
) -> tuple[Row, np.ndarray]:
    """The flat index's row and the exact top-k rows of every query."""
    index, build_s, size, rss = timed_build(
        lambda: build_index(vectors, ids, kind="flat", show_progress=False)
    )
    wall, cpu, exact = timed_search(index, queries, k, repeats=repeats)
    n_q = len(queries)
    row = Row("flat", "exact", build_s, size, rss, n_q / wall, n_q / cpu, 1.0)
    return row, exact


def bench_approx(
    kind: str,
    vectors: np.ndarray,
    ids: list[str],
    queries: np.ndarray,
    exact: np.ndarray,
    scope: str,
    args: argparse.Namespace,
) -> list[Row]:
    """Build one approximate index and sweep its query-time parameter."""
    # build with the index's defaults, overridden by the flags given
    params: dict[str, int] = {}
    if kind == "hnsw":
        params = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction}
        sweep_name, sweep = "ef_search", args.ef_sweep
    else:
        if args.nlist:
            params = {"nlist": args.nlist}
        sweep_name, sweep = "nprobe", args.nprobe_sweep
    index, build_s, size, rss = timed_build(
        lambda: build_index(vectors, ids, kind=kind, params=params, show_progress=True)
    )
    fixed = ", ".join(f"{k}={v}" for k, v in index.params.items() if k != sweep_name)

    # one batched search per setting of the query-time parameter
    rows = []
    n_q = len(queries)
    for value in sweep:
        index.set_search_params(**{sweep_name: value})
        wall, cpu, found = timed_search(index, queries, args.k, repeats=args.repeats)
        qps = n_q / wall
        recall = recall_at_k(found, exact)
        setting = f"{fixed}, {sweep_name}={index.params[sweep_name]}"
        rows.append(Row(kind, setting, build_s, size, rss, qps, n_q / cpu, recall, scope))
        print(
            f"  {kind} {setting}: recall@{args.k}={recall:.3f}, {qps:.0f} q/s",
            file=sys.stderr,
            flush=True,
        )
    del index
    gc.collect()
    return rows


def speedups(row: Row, rows: Sequence[Row]) -> tuple[float, float]:
    """Speed-up of ``row`` over exact search, by wall-clock q/s and by queries per CPU-second.

    Each is taken against the fastest exact measurement of the same scope by that measure.
    """
    exact = [r for r in rows if r.kind == "flat" and r.scope == row.scope]
    best_wall = max(r.qps for r in exact)
    best_cpu = max(r.q_per_cpu_s for r in exact)
    return row.qps / best_wall, row.q_per_cpu_s / best_cpu


def print_table(rows: Sequence[Row], k: int) -> None:
    """The results as a Markdown table on stdout."""
    print(
        f"| kind | parameters | build s | index MiB | RSS growth MiB | q/s (1 batch) "
        f"| q per CPU-s | recall@{k} | speed-up (wall) | speed-up (CPU) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        wall, cpu = speedups(r, rows)
        print(
            f"| {r.kind} | {r.setting} | {r.build_s:.1f} | {r.size_mib:.0f} | {r.rss_mib:.0f} "
            f"| {r.qps:.0f} | {r.q_per_cpu_s:.0f} | {r.recall:.3f} | {wall:.1f}x | {cpu:.1f}x |"
        )


def operating_point(rows: Sequence[Row], target: float) -> Row | None:
    """The approximate setting fastest per CPU-second whose recall reaches ``target``."""
    good = [r for r in rows if r.kind != "flat" and r.recall >= target]
    return max(good, key=lambda r: speedups(r, rows)[1]) if good else None


def bench_model(model_dir: Path, n_users: int, k: int, seed: int) -> None:
    """Warm latency of ``Recommender.recommend`` for ``n_users`` users of a trained model."""
    # the ranking package is optional here: its interface may not exist yet
    print("\n## Recommendation latency\n")
    try:
        from ranking.recommend import Recommender
    except ImportError as err:
        print(f"skipped: ranking.recommend.Recommender cannot be imported ({err})")
        return

    # load once, pick users the model knows, warm up on the first
    started = time.perf_counter()
    try:
        rec: Any = Recommender.load(model_dir)
        load_s = time.perf_counter() - started
    except EncoreError as err:
        print(f"skipped: the model at {model_dir} cannot be loaded ({err})")
        return
    data = getattr(rec, "data", None)
    user_ids = [str(u) for u in getattr(data, "user_ids", getattr(rec, "user_ids", []))]
    known = getattr(rec, "knows", lambda user: True)
    rng = np.random.default_rng(seed)
    users = [user_ids[i] for i in rng.permutation(len(user_ids))]
    users = [u for u in users if known(u)][:n_users]
    if not users:
        print("skipped: the Recommender lists no known users (`rec.data.user_ids`)")
        return
    try:
        rec.recommend(users[0], k=k)
    except EncoreError as err:
        print(f"skipped: the model at {model_dir} cannot recommend ({err})")
        return

    # one call per user, timed separately
    latencies = []
    for user in users:
        started = time.perf_counter()
        rec.recommend(user, k=k)
        latencies.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(latencies, [50, 95])
    print(f"model {model_dir} loaded in {load_s:.1f} s; one warm-up call, then one call per user\n")
    print("| users | k | p50 ms | p95 ms | max ms |\n|---:|---:|---:|---:|---:|")
    print(f"| {len(users)} | {k} | {p50:.1f} | {p95:.1f} | {max(latencies):.1f} |")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables; returns the exit status."""
    args = _parser().parse_args(argv)
    set_threads(args.threads)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]

    # songs and queries from the generator (the subspace cannot exceed the space)
    args.rank = min(args.rank, args.dim)
    gen = {
        "dim": args.dim,
        "n_clusters": args.n_clusters,
        "rank": args.rank,
        "spread": args.spread,
        "noise": args.noise,
        "seed": args.seed,
    }
    started = time.perf_counter()
    vectors, labels = make_vectors(args.n_songs, stream=1, **gen)
    queries, _ = make_vectors(args.n_queries, stream=2, **gen)
    ids = [f"s{i}" for i in range(args.n_songs)]
    gen_s = time.perf_counter() - started

    # header: the machine and the data
    print("# Retrieval benchmark\n")
    print(
        f"{args.n_songs:,} songs x {args.dim} dims, {args.n_queries:,} queries, k={args.k}; "
        f"generator: {args.n_clusters} centres in a rank-{args.rank} subspace, "
        f"spread={args.spread}, noise={args.noise}, seed={args.seed} ({gen_s:.0f} s)  "
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"FAISS {faiss.__version__} with {faiss.omp_get_max_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f} at start\n"
    )

    # exact search: the reference for recall and speed
    flat_row, exact = bench_exact(vectors, ids, queries, args.k, args.repeats)
    spans = [len(np.unique(labels[r])) for r in exact]
    print(
        f"exact top-{args.k} spans {np.mean(spans):.1f} clusters on average "
        f"(min {min(spans)}, max {max(spans)})\n"
    )
    rows = [flat_row]

    # approximate kinds; HNSW optionally on a subset with its own exact reference
    notes = []
    for kind in [k for k in kinds if k != "flat"]:
        if kind == "hnsw" and args.hnsw_max_songs and args.hnsw_max_songs < args.n_songs:
            m = args.hnsw_max_songs
            sub_flat, sub_exact = bench_exact(vectors[:m], ids[:m], queries, args.k, args.repeats)
            sub_flat.setting, sub_flat.scope = f"exact, first {m:,} songs", "subset"
            rows.append(sub_flat)
            rows += bench_approx(kind, vectors[:m], ids[:m], queries, sub_exact, "subset", args)
            notes.append(
                f"HNSW was built on the first {m:,} songs only; its recall and speed-up are "
                f"against exact search over those songs."
            )
        else:
            rows += bench_approx(kind, vectors, ids, queries, exact, "all", args)

    # exact search timed again, as the load of a shared machine drifts; the faster one counts
    if len(rows) > 1:
        flat_row.setting = "exact, timed first"
        again, _ = bench_exact(vectors, ids, queries, args.k, args.repeats)
        again.setting = "exact, timed again last"
        rows.insert(1, again)

    # the table and the operating point
    print_table(rows, args.k)
    for note in notes:
        print(f"\n{note}")
    best = operating_point(rows, args.target_recall)
    if len(kinds) == 1 and kinds[0] == "flat":
        pass
    elif best is None:
        print(f"\nno approximate setting reached recall@{args.k} >= {args.target_recall}")
    else:
        wall, cpu = speedups(best, rows)
        print(
            f"\noperating point: {best.kind} ({best.setting}): recall@{args.k}={best.recall:.3f} "
            f"at {best.qps:.0f} q/s, {wall:.1f}x exact by wall clock, {cpu:.1f}x per CPU-second"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak resident set of the benchmark: {peak:.2f} GiB")

    # the optional model section
    if args.model is not None:
        bench_model(args.model, args.users, 10, args.seed)
    return 0


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    n = 420_000
    ivf = default_params("ivf", n)
    hnsw = default_params("hnsw", n)
    parser = argparse.ArgumentParser(
        prog="bench_retrieval",
        description="Build time, memory, batched queries/s and recall of flat, HNSW and IVF.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n-songs", type=int, default=n, help="songs indexed")
    parser.add_argument("--dim", type=int, default=1024, help="vector dimension")
    parser.add_argument("--n-queries", type=int, default=1000, help="queries, one batch")
    parser.add_argument("--k", type=int, default=100, help="neighbours per query")
    parser.add_argument(
        "--kinds", default="flat,hnsw,ivf,ivf_sq8", help="comma-separated index kinds"
    )
    parser.add_argument("--n-clusters", type=int, default=1000, help="generator: centres")
    parser.add_argument("--rank", type=int, default=48, help="generator: subspace dimension")
    parser.add_argument("--spread", type=float, default=1.0, help="generator: cluster spread")
    parser.add_argument("--noise", type=float, default=0.1, help="generator: isotropic noise")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--threads", type=int, default=None, help="FAISS threads (all if unset)")
    parser.add_argument("--repeats", type=int, default=2, help="searches timed per setting")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (index default)")
    parser.add_argument(
        "--nprobe-sweep", type=_int_list, default=[8, 16, 24, 32, 64], help="IVF nprobe values"
    )
    parser.add_argument("--hnsw-m", type=int, default=hnsw["hnsw_m"], help="HNSW graph degree")
    parser.add_argument(
        "--ef-construction", type=int, default=hnsw["ef_construction"], help="HNSW build list"
    )
    parser.add_argument(
        "--ef-sweep", type=_int_list, default=[128, 192, 256, 384], help="HNSW ef_search values"
    )
    parser.add_argument(
        "--hnsw-max-songs", type=int, default=None, help="build HNSW on the first songs only"
    )
    parser.add_argument("--target-recall", type=float, default=0.95, help="operating point")
    parser.add_argument("--model", type=Path, default=None, help="trained model folder")
    parser.add_argument("--users", type=int, default=100, help="users timed with --model")
    parser.epilog = f"IVF defaults at {n:,} songs: {ivf}"
    return parser


if __name__ == "__main__":
    sys.exit(main())
