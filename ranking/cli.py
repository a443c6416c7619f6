"""Command lines of the ranking package: ``train-ranker`` and ``rank``.

``train-ranker DATA [--index DIR] --out MODEL`` trains and validates the ranker (see
:mod:`ranking.train`). ``rank`` applies a model folder in one of three modes, one flag of a
mutually exclusive group each, dispatched through :data:`RANK_MODES`:

- ``rank --model MODEL --submission PATH`` writes a Kaggle submission;
- ``rank --model MODEL --user MSNO [-k 10] [--format table|json] [--seed-songs ID,...]``
  prints a user's top songs (see :mod:`ranking.recommend`);
- ``rank --model MODEL --evaluate --report DIR`` evaluates the recommendations on the
  validation tail (see :mod:`ranking.evaluate`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from embedding._log import configure_cli_logging
from embedding.errors import EncoreError

from .evaluate import evaluate, summary_markdown, write_report
from .features import AUDIO_GROUP, DEFAULT_GROUPS, FEATURE_GROUPS
from .recommend import Item, Recommender
from .train import TrainConfig, predict_test, train_ranker

USAGE_EXIT = 2
ERROR_EXIT = 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(USAGE_EXIT)


def _train_parser() -> argparse.ArgumentParser:
    """Arguments of ``train-ranker``, defaults from :class:`TrainConfig`."""
    defaults = TrainConfig()
    parser = _Parser(
        prog="train-ranker",
        description="Train the LightGBM ranker on a KKBox folder with a time-ordered validation, "
        "a starter baseline and a refit on all train rows.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data", type=Path, help="folder of the KKBox CSVs")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument(
        "--index",
        type=Path,
        metavar="DIR",
        help="song index folder from build-index: adds the audio feature group, the ablation "
        "without it and the taste profiles for rank --user",
    )
    parser.add_argument(
        "--valid-frac",
        type=float,
        default=defaults.valid_frac,
        help="share of train rows, from the end, used for validation",
    )
    parser.add_argument(
        "--groups",
        nargs="+",
        default=list(DEFAULT_GROUPS),
        metavar="GROUP",
        help=f"feature groups, from {sorted(FEATURE_GROUPS)}",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of folds and SVD")
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="LightGBM threads (0: all cores)"
    )
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-rounds", type=int, default=defaults.max_rounds)
    parser.add_argument(
        "--early-stopping",
        type=int,
        default=defaults.early_stopping,
        help="rounds without a validation AUC gain before stopping",
    )
    parser.add_argument("--num-leaves", type=int, default=defaults.num_leaves)
    parser.add_argument(
        "--max-categories",
        type=int,
        default=defaults.max_categories,
        help="most levels kept per categorical feature (rarer ones become missing)",
    )
    parser.add_argument(
        "--no-refit", action="store_true", help="use the validation model for test, no refit"
    )
    parser.add_argument(
        "--no-starter", action="store_true", help="skip the starter baseline on raw columns"
    )
    parser.add_argument(
        "--log-every", type=int, default=defaults.log_every, help="log the AUC every N rounds"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    return parser


def _summary(metrics: dict[str, object]) -> str:
    """A short Markdown table of the headline metrics."""
    rows = [
        ("valid AUC", metrics["valid_auc"]),
        ("starter AUC", metrics["starter_auc"]),
        ("oracle AUC", metrics["oracle_auc"]),
        ("lift ratio", metrics["lift_ratio"]),
        ("starter lift ratio", metrics["starter_lift_ratio"]),
        ("audio: valid AUC with / without", _ablation(metrics.get("ablation"))),
        ("best rounds", metrics["best_iteration"]),
        ("refit rounds", metrics["refit_rounds"]),
        (
            "fit / valid / test rows",
            "{n_fit_rows} / {n_valid_rows} / {n_test_rows}".format(**metrics),
        ),
        ("seconds", metrics["seconds"]),
    ]
    lines = ["| metric | value |", "|---|---|"]
    for name, value in rows:
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        lines.append(f"| {name} | {shown} |")
    return "\n".join(lines)


def _ablation(ablation: object) -> str | None:
    """The ablation as "with / without (lift)", or None when there was none."""
    if not isinstance(ablation, dict):
        return None
    with_audio, without = ablation.get("with_audio"), ablation.get("without_audio")
    if with_audio is None or without is None:
        return None
    return f"{with_audio:.4f} / {without:.4f} ({with_audio - without:+.4f})"


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train-ranker``; returns the exit status.

    Parameters
    ----------
    argv : sequence of str or None, optional (default=None)
        Arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    int
        0 on success, 1 on a data or model error, 2 on a usage error.

    Examples
    --------
    >>> train_main(["data/kkbox", "--out", "models/ranker"])  # doctest: +SKIP
    >>> train_main(["demo/data", "--index", "demo/index", "--out", "models/demo"])  # doctest: +SKIP
    """
    # parse and validate the options
    parser = _train_parser()
    args = parser.parse_args(argv)
    configure_cli_logging(args.verbose)
    unknown = [g for g in args.groups if g not in FEATURE_GROUPS]
    if unknown:
        parser.error(
            f"--groups {' '.join(unknown)}: unknown group; choose from "
            f"{' '.join(sorted(FEATURE_GROUPS))}"
        )
    if AUDIO_GROUP in args.groups and args.index is None:
        parser.error(f"--groups {AUDIO_GROUP} needs --index DIR (a build-index folder)")
    if not 0.0 < args.valid_frac < 1.0:
        parser.error(f"--valid-frac {args.valid_frac}: expected a share strictly between 0 and 1")
    config = TrainConfig(
        valid_frac=args.valid_frac,
        groups=tuple(args.groups),
        seed=args.seed,
        threads=args.threads,
        learning_rate=args.learning_rate,
        max_rounds=args.max_rounds,
        early_stopping=args.early_stopping,
        num_leaves=args.num_leaves,
        max_categories=args.max_categories,
        refit=not args.no_refit,
        starter=not args.no_starter,
        log_every=args.log_every,
    )

    # train, then the summary on stdout
    try:
        metrics = train_ranker(args.data, args.out, config=config, index_dir=args.index)
    except EncoreError as exc:
        sys.stderr.write(f"train-ranker: error: {exc}\n")
        return ERROR_EXIT
    print(_summary(metrics))
    print(f"model written to {args.out}")
    return 0


def _rank_parser() -> argparse.ArgumentParser:
    """Arguments of ``rank``: the model folder and exactly one mode."""
    parser = _Parser(
        prog="rank",
        description="Apply a model folder written by train-ranker.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    modes = parser.add_mutually_exclusive_group(required=True)
    modes.add_argument(
        "--submission",
        type=Path,
        metavar="PATH",
        help="write id,target for every test row (Kaggle format)",
    )
    modes.add_argument("--user", metavar="MSNO", help="print the top songs for this user")
    modes.add_argument(
        "--evaluate",
        action="store_true",
        help="evaluate recommendations on the validation tail (needs --report)",
    )
    parser.add_argument("-k", "--k", type=int, default=10, help="songs to list with --user")
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output of --user"
    )
    parser.add_argument(
        "--seed-songs",
        metavar="ID,ID,...",
        help="song ids whose audio describes the user's taste (required for an unknown user)",
    )
    parser.add_argument("--report", type=Path, metavar="DIR", help="report folder of --evaluate")
    parser.add_argument(
        "--max-users",
        type=int,
        metavar="N",
        help="evaluate at most N users (an evenly spaced subset); all when unset",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    return parser


def _rank_submission(args: argparse.Namespace) -> int:
    """``rank --submission``: predict every test row and write ``id,target``."""
    submission = predict_test(args.model)
    args.submission.parent.mkdir(parents=True, exist_ok=True)
    submission.to_csv(args.submission, index=False, float_format="%.6f")
    print(f"wrote {len(submission)} predictions to {args.submission}")
    return 0


def _rank_user(args: argparse.Namespace) -> int:
    """``rank --user``: the user's top ``k`` songs as a table or one JSON object."""
    if args.k < 1:
        sys.stderr.write(f"rank: error: -k {args.k}: expected at least 1 (see rank --help)\n")
        return USAGE_EXIT
    seeds = (
        [s.strip() for s in args.seed_songs.split(",") if s.strip()] if args.seed_songs else None
    )
    recommender = Recommender.load(args.model)
    items = recommender.recommend(args.user, k=args.k, seed_songs=seeds)
    if args.format == "json":
        print(json.dumps({"user": args.user, "items": [_json_item(i) for i in items]}))
        return 0
    print(_items_table(items))
    return 0


def _json_item(item: Item) -> dict[str, Any]:
    """The JSON fields of one recommended item."""
    full = item.to_dict()
    return {key: full[key] for key in ("song_id", "score", "cosine", "name", "artist", "tags")}


def _items_table(items: Sequence[Item]) -> str:
    """A fixed-width table of recommended items."""
    header = (
        f"{'rank':>4}  {'song_id':<44}  {'name':<24}  {'artist':<20}  {'score':>6}  "
        f"{'cosine':>6}  tags"
    )
    lines = [header, "-" * len(header)]
    for rank, item in enumerate(items, start=1):
        cosine = "" if item.cosine is None else f"{item.cosine:.3f}"
        tags = ", ".join(f"{tag} {score:.2f}" for tag, score in item.tags)
        lines.append(
            f"{rank:>4}  {item.song_id:<44}  {_clip(item.name, 24):<24}  "
            f"{_clip(item.artist, 20):<20}  {item.score:>6.3f}  {cosine:>6}  {tags}"
        )
    return "\n".join(lines)


def _clip(text: str | None, width: int) -> str:
    """``text`` cut to ``width`` characters ("" for None)."""
    if text is None:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _rank_evaluate(args: argparse.Namespace) -> int:
    """``rank --evaluate --report DIR``: leak-free evaluation of the recommendations."""
    if args.report is None:
        sys.stderr.write("rank: error: --evaluate needs --report DIR (see rank --help)\n")
        return USAGE_EXIT
    evaluation = evaluate(args.model, max_users=args.max_users)
    write_report(evaluation, args.report)
    print(summary_markdown(evaluation.metrics))
    print(f"report written to {args.report}")
    return 0


# mode flag (its argparse dest) -> handler
RANK_MODES: dict[str, Callable[[argparse.Namespace], int]] = {
    "submission": _rank_submission,
    "user": _rank_user,
    "evaluate": _rank_evaluate,
}


def rank_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rank``; returns the exit status.

    Parameters
    ----------
    argv : sequence of str or None, optional (default=None)
        Arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    int
        0 on success, 1 on a data or model error (e.g. a changed data folder), 2 on a usage
        error.

    Examples
    --------
    >>> rank_main(["--model", "models/ranker", "--submission", "submission.csv"])  # doctest: +SKIP
    >>> rank_main(["--model", "models/demo", "--user", "MSNO", "-k", "10"])  # doctest: +SKIP
    >>> rank_main(["--model", "models/demo", "--evaluate", "--report", "out"])  # doctest: +SKIP
    """
    # parse, then run the one mode given
    args = _rank_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    mode = next(name for name in RANK_MODES if getattr(args, name, None) not in (None, False))
    try:
        return RANK_MODES[mode](args)
    except EncoreError as exc:
        sys.stderr.write(f"rank: error: {exc}\n")
        return ERROR_EXIT
