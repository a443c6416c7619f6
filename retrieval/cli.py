"""``build-index``: build a cosine song index over an embedding store and save it to a folder.

The folder holds ``index.faiss`` (the FAISS index), ``ids.json`` (row to song id) and
``meta.json`` (see :func:`retrieval.index.read_meta`): the store's fingerprint and absolute path,
the dimension, metric, kind and parameters, the number of songs and the encoder name.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from embedding._log import configure_cli_logging
from embedding.errors import EncoreError
from embedding.store import load_store

from ._log import logger
from .index import AUTO_APPROX_KIND, AUTO_FLAT_MAX, KINDS, build_index_from_store, default_params

# index parameters that have a flag; unset flags leave the parameter to default_params
PARAM_FLAGS = ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "train_size")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``build-index``; returns the exit status (0 done, 1 error, 2 usage error).

    Parameters
    ----------
    argv : sequence of str or None, optional (default=None)
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        The exit status.

    Examples
    --------
    >>> main(["songs-musicnn", "--out", "songs-musicnn-index", "--kind", "flat"])  # doctest: +SKIP
    0
    """
    # parse; argparse exits with status 2 on a usage error
    args = _parser().parse_args(argv)
    configure_cli_logging(args.verbose)

    # load, build, save; an Encore error is one line on stderr and status 1
    try:
        started = time.perf_counter()
        store = load_store(args.store)
        given = {name: getattr(args, name) for name in PARAM_FLAGS if hasattr(args, name)}
        with logging_redirect_tqdm():
            index = build_index_from_store(
                store,
                kind=args.kind,
                params=given,
                threads=getattr(args, "threads", None),
                seed=args.seed,
            )
        index.save(args.out)
    except EncoreError as err:
        print(f"build-index: error: {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    logger.debug("build-index finished in %.1f s", seconds)

    # the summary on stdout
    settings = ", ".join(f"{k}={v}" for k, v in index.params.items()) or "exact"
    print(
        f"indexed {index.n} songs (dim {index.dim}, encoder {index.encoder}) from store "
        f"{index.store_path} (fingerprint {index.store_fingerprint})"
    )
    print(f"{index.kind} index ({settings}) saved to {args.out} in {seconds:.1f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build-index",
        description=(
            "Build a cosine (L2-normalised inner product) FAISS index over the songs of an "
            "embedding store and save it with its id map and metadata. Parameters left unset "
            "are sized from the number of songs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("store", type=Path, metavar="STORE", help="embedding store folder")
    parser.add_argument(
        "--out", type=Path, required=True, default=argparse.SUPPRESS, help="index folder (created)"
    )
    parser.add_argument(
        "--kind",
        default="auto",
        choices=KINDS,
        help=f"index kind; auto is flat up to {AUTO_FLAT_MAX:,} songs, {AUTO_APPROX_KIND} above",
    )
    # index parameters: absent from the namespace unless given
    unset = argparse.SUPPRESS
    hnsw_defaults = default_params("hnsw", 1)
    hnsw = parser.add_argument_group("hnsw parameters")
    hnsw.add_argument(
        "--hnsw-m",
        type=_positive_int,
        default=unset,
        help=f"graph degree (default: {hnsw_defaults['hnsw_m']})",
    )
    hnsw.add_argument(
        "--ef-construction",
        type=_positive_int,
        default=unset,
        help=f"candidate list when building (default: {hnsw_defaults['ef_construction']})",
    )
    hnsw.add_argument(
        "--ef-search",
        type=_positive_int,
        default=unset,
        help=f"candidate list when searching (default: {hnsw_defaults['ef_search']})",
    )
    ivf = parser.add_argument_group("ivf and ivf_sq8 parameters")
    ivf.add_argument(
        "--nlist",
        type=_positive_int,
        default=unset,
        help="k-means lists (default: the power of two nearest 4 * sqrt(n_songs))",
    )
    ivf.add_argument(
        "--nprobe",
        type=_positive_int,
        default=unset,
        help="lists scanned per query (default: nlist / 64, at least 8)",
    )
    ivf.add_argument(
        "--train-size",
        type=_positive_int,
        default=unset,
        help="songs k-means trains on (default: 64 * nlist)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=unset,
        help="FAISS threads (default: all cores)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the IVF training sample")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


if __name__ == "__main__":
    sys.exit(main())
