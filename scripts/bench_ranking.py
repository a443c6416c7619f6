"""Benchmark of the ranking pipeline: wall time and peak RSS of load, features, train, predict.

Runs on a KKBox-format folder (``--data``) or, without one, on a demo world generated into a
temporary folder with ``scripts/make_demo_world.py --scale SCALE``. Training runs a fixed number
of rounds the way ``train-ranker`` trains (validation set evaluated every round), and a bare
``lightgbm.train`` on the same matrix with the same parameters gives the reference seconds per
round. Prints a Markdown table and the targets.

Targets (2 cores): load + features <= 5 min; peak RSS <= 10 GB; training <= 1.2x the bare run's
seconds per round.

    .venv/bin/python scripts/bench_ranking.py                 # full-scale demo world
    .venv/bin/python scripts/bench_ranking.py --scale demo    # smaller, quicker
    .venv/bin/python scripts/bench_ranking.py --data path/to/kkbox
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightgbm as lgb
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedding._log import configure_cli_logging  # noqa: E402
from ranking.data import load_kkbox  # noqa: E402
from ranking.features import build_features  # noqa: E402
from ranking.train import TrainConfig, fit_booster, lgb_params  # noqa: E402

GB = 1024**3


class PeakRss:
    """Samples this process's resident memory in a thread; ``reset`` starts a new window."""

    def __init__(self, every: float = 0.05) -> None:
        self._process = psutil.Process()
        self._every = every
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self._every)

    def reset(self) -> None:
        self._peak = self._process.memory_info().rss

    def peak(self) -> int:
        return max(self._peak, self._process.memory_info().rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def stage(name: str, rows: list[dict[str, object]], rss: PeakRss) -> Iterator[None]:
    """Time a stage and record its peak RSS into ``rows``."""
    rss.reset()
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    rows.append({"stage": name, "seconds": seconds, "peak_rss_gb": rss.peak() / GB})
    print(f"  {name}: {seconds:.1f} s, peak RSS {rss.peak() / GB:.2f} GB", file=sys.stderr)


def make_world(scale: str, seed: int, out: Path) -> Path:
    """Generate a demo world with scripts/make_demo_world.py; returns its data folder."""
    script = REPO / "scripts" / "make_demo_world.py"
    command = [
        sys.executable,
        str(script),
        "--out",
        str(out),
        "--scale",
        scale,
        "--seed",
        str(seed),
    ]
    print(f"generating the {scale} demo world into {out} ...", file=sys.stderr)
    subprocess.run(command, check=True)
    return out / "data"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, help="KKBox folder; default: generate a demo world")
    parser.add_argument("--scale", default="full", choices=["tiny", "demo", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="LightGBM threads (0: all)")
    parser.add_argument("--rounds", type=int, default=100, help="rounds of the timed training")
    parser.add_argument("--bare-rounds", type=int, default=20, help="rounds of the bare run")
    parser.add_argument("--valid-frac", type=float, default=0.2)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args()
    configure_cli_logging(args.verbose)

    # the data folder
    tmp = None
    generate_seconds = None
    folder = args.data
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="encore-bench-")
        started = time.perf_counter()
        folder = make_world(args.scale, args.seed, Path(tmp.name))
        generate_seconds = time.perf_counter() - started

    rows: list[dict[str, object]] = []
    rss = PeakRss()
    config = TrainConfig(threads=args.threads, seed=args.seed, valid_frac=args.valid_frac)
    params = lgb_params(config)

    # load and features, as train-ranker does them
    with stage("load", rows, rss):
        data = load_kkbox(folder, show_progress=False)
    n_train = len(data.train)
    n_fit = int(round(n_train * (1 - args.valid_frac)))
    y = data.train["target"].to_numpy(dtype=np.float64)
    with stage("features", rows, rss):
        feats = build_features(data, fit_mask=np.arange(n_train) < n_fit, seed=args.seed)

    # training the way train-ranker trains, a fixed number of rounds
    with stage(f"train ({args.rounds} rounds, with validation)", rows, rss):
        booster = fit_booster(
            feats.X.iloc[:n_fit],
            y[:n_fit],
            params,
            X_valid=feats.X.iloc[n_fit:n_train],
            y_valid=y[n_fit:],
            categorical=feats.categorical_names,
            max_rounds=args.rounds,
            early_stopping=0,
            log_every=0,
        )
    train_per_round = float(rows[-1]["seconds"]) / args.rounds  # type: ignore[arg-type]

    # the bare reference: the Dataset built outside the clock, then lightgbm.train alone
    fit_set = lgb.Dataset(
        feats.X.iloc[:n_fit], label=y[:n_fit], categorical_feature=feats.categorical_names
    ).construct()
    with stage(f"bare lightgbm.train ({args.bare_rounds} rounds)", rows, rss):
        lgb.train(params, fit_set, num_boost_round=args.bare_rounds)
    bare_per_round = float(rows[-1]["seconds"]) / args.bare_rounds  # type: ignore[arg-type]
    del fit_set

    # predicting the test rows
    with stage("predict (test rows)", rows, rss):
        booster.predict(feats.X.iloc[n_train:])
    rss.stop()

    # the table and the targets
    n_test = 0 if data.test is None else len(data.test)
    print(
        f"\n{n_train:,} train rows ({n_fit:,} fitting), {n_test:,} test rows, "
        f"{len(feats.feature_names)} features, {os.cpu_count()} CPUs (shared)"
    )
    if generate_seconds is not None:
        print(f"demo world ({args.scale}) generated in {generate_seconds:.0f} s (not timed below)")
    print("\n| stage | seconds | peak RSS (GB) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['seconds']:.1f} | {row['peak_rss_gb']:.2f} |")
    load_features = sum(float(str(r["seconds"])) for r in rows[:2])
    peak = max(float(str(r["peak_rss_gb"])) for r in rows)
    ratio = train_per_round / bare_per_round
    print("\n| target | measured | met |\n|---|---|---|")
    print(f"| load + features <= 300 s | {load_features:.0f} s | {load_features <= 300} |")
    print(f"| peak RSS <= 10 GB | {peak:.2f} GB | {peak <= 10} |")
    print(
        f"| train s/round <= 1.2 x bare | {train_per_round:.2f} vs {bare_per_round:.2f} s "
        f"({ratio:.2f}x) | {ratio <= 1.2} |"
    )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
