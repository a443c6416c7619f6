"""Measure the audio ablation on demo worlds: validation AUC with and without the audio group.

For each world seed it runs the README demo's chain: ``make_demo_world.py --audio``,
``embed-audio --encoder musicnn --layer mean_pool``, ``build-index`` and ``train-ranker --index``
(without the refit and the starter baseline, which do not change the ablation), then reads
``ablation`` and the lift ratio from the model's ``metrics.json``. With ``--vectors true-style``
the song vectors are the world's true audible style (``song_style.csv``) instead of musicnn's:
what the same audio columns could add if an encoder heard the rendered style perfectly, the
ceiling of the feature on that world.

``--train-seeds`` trains the ranker once per ``train-ranker --seed`` on each world (other folds,
SVD and booster randomness) and reports the means: on the demo world the gain of one training
run moves by about 0.002 from seed to seed, as much as the differences being measured.

Prints a Markdown table (seed, AUC with and without audio, gain, lift ratio) and the mean gain;
the project aims for a mean gain of at least 0.005 over seeds 0, 1 and 2. Each seed's folder
keeps its world, store, index and models; a rerun with the same ``--work`` reuses every world and
model that finished, so an interrupted run loses at most the step in flight.

    .venv/bin/python scripts/audio_ablation.py                        # seeds 0 1 2, musicnn
    .venv/bin/python scripts/audio_ablation.py --vectors true-style   # the ceiling
    .venv/bin/python scripts/audio_ablation.py --seeds 0 --work runs/ablation
    .venv/bin/python scripts/audio_ablation.py --train-seeds 0 1 2 3 --work runs/ablation
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedding import write_store  # noqa: E402

VECTORS = ("musicnn", "true-style")
# the musicnn layer the demo embeds with (scripts/demo.sh)
MUSICNN_LAYER = "mean_pool"
TARGET_GAIN = 0.005


def tool(name: str) -> str:
    """Path of a console script of this environment (installed by scripts/setup.sh)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(
            f"audio_ablation: error: console script {name!r} not found beside "
            f"python={sys.executable!r}; run bash scripts/setup.sh and use .venv/bin/python"
        )
    return str(path)


def run(command: list[str]) -> None:
    """Run one step of the chain, echoed, its output to stderr; a failing step stops the run."""
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr)


def true_style_store(world: Path, out: Path) -> None:
    """Write an embedding store whose vectors are the world's true audible style per song."""
    style = pd.read_csv(world / "data" / "song_style.csv")
    ids = style["song_id"].astype(str).tolist()
    vectors = style.drop(columns="song_id").to_numpy(dtype="float32")
    write_store(out, ids, vectors, {"encoder": "true-style", "source": "song_style.csv"})


def one_seed(
    seed: int, vectors: str, folder: Path, scale: str, train_seeds: list[int]
) -> dict[str, Any]:
    """Build one world's chain in ``folder`` (or reuse a finished one) and return its figures.

    Parameters
    ----------
    seed : int
        Seed of the demo world.
    vectors : str
        ``musicnn`` (rendered clips through embed-audio) or ``true-style`` (``song_style.csv``).
    folder : Path
        The seed's folder: world, ``embeddings`` and ``index`` go below it, and one model folder
        per training seed (``model`` for seed 0, ``model-seed{S}`` for the others).
    scale : str
        Size of the world (``make_demo_world.py --scale``).
    train_seeds : list of int
        Seeds of ``train-ranker --seed`` (its folds, SVD and booster); the figures are their means.

    Returns
    -------
    dict
        ``seed``, ``with_audio``, ``without_audio``, ``gain`` and ``lift_ratio`` (means over the
        training seeds), and ``gains`` (one per training seed).
    """
    # a world whose index is finished is reused; anything else starts afresh
    index = folder / "index"
    if not (index / "meta.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        world = [sys.executable, str(REPO / "scripts" / "make_demo_world.py"), "--out", str(folder)]
        world += ["--scale", scale, "--seed", str(seed)]
        run(world + (["--audio"] if vectors == "musicnn" else []))

        # the song vectors and their index
        store = folder / "embeddings"
        if vectors == "musicnn":
            manifest = str(folder / "audio" / "manifest.csv")
            embed = [tool("embed-audio"), "--manifest", manifest, "--out", str(store)]
            run(embed + ["--encoder", "musicnn", "--layer", MUSICNN_LAYER])
        else:
            true_style_store(folder, store)
        run([tool("build-index"), str(store), "--out", str(index)])

    # the ranker with the audio group, once per training seed (finished models are read back)
    runs = []
    for train_seed in train_seeds:
        model = folder / ("model" if train_seed == 0 else f"model-seed{train_seed}")
        if not (model / "metrics.json").exists():
            train = [tool("train-ranker"), str(folder / "data"), "--index", str(index)]
            train += ["--out", str(model), "--no-refit", "--no-starter", "--seed", str(train_seed)]
            run(train)
        runs.append(json.loads((model / "metrics.json").read_text()))

    # the figures of their metrics.json, averaged over the training seeds
    with_audio = [m["ablation"]["with_audio"] for m in runs]
    without = [m["ablation"]["without_audio"] for m in runs]
    lifts = [m["lift_ratio"] for m in runs if m.get("lift_ratio") is not None]
    gains = [w - wo for w, wo in zip(with_audio, without, strict=True)]
    return {
        "seed": seed,
        "with_audio": _mean(with_audio),
        "without_audio": _mean(without),
        "gain": _mean(gains),
        "lift_ratio": _mean(lifts) if lifts else None,
        "gains": gains,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(rows: list[dict[str, Any]], vectors: str) -> str:
    """The Markdown table of the seeds and the mean gain.

    With more than one training seed the figures are means over them and a last column lists
    each training seed's gain.
    """
    several = any(len(row["gains"]) > 1 for row in rows)
    head = f"| world seed ({vectors}) | with audio | without | gain | lift ratio |"
    lines = [head + (" gain per training seed |" if several else ""), "|---|---:|---:|---:|---:|"]
    lines[1] += "---|" if several else ""
    for row in rows:
        lift = "" if row["lift_ratio"] is None else f"{row['lift_ratio']:.3f}"
        line = (
            f"| {row['seed']} | {row['with_audio']:.4f} | {row['without_audio']:.4f} "
            f"| {row['gain']:+.4f} | {lift} |"
        )
        if several:
            line += " " + ", ".join(f"{g:+.4f}" for g in row["gains"]) + " |"
        lines.append(line)
    mean = _mean([row["gain"] for row in rows])
    lines.append(f"| mean | | | {mean:+.4f} | |" + (" |" if several else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="world seeds")
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="train-ranker seeds per world (folds, SVD, booster); figures are their means",
    )
    parser.add_argument("--vectors", choices=VECTORS, default="musicnn", help="song vectors")
    parser.add_argument("--scale", default="demo", choices=["tiny", "demo"], help="world size")
    parser.add_argument(
        "--work", type=Path, help="folder for the seeds' chains, kept (default: a temporary one)"
    )
    args = parser.parse_args(argv)

    # one chain per seed, under the work folder
    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="encore-ablation-")
        work = Path(tmp.name)
    try:
        rows = [
            one_seed(
                seed,
                args.vectors,
                work / f"{args.vectors}-{args.scale}-seed{seed}",
                args.scale,
                args.train_seeds,
            )
            for seed in args.seeds
        ]
    finally:
        if tmp is not None:
            tmp.cleanup()

    # the table, and the mean gain against the project's aim
    print(table(rows, args.vectors))
    mean = _mean([row["gain"] for row in rows])
    verdict = "meets" if mean >= TARGET_GAIN else "is below"
    print(
        f"\nmean gain {mean:+.4f}: {verdict} the aim of +{TARGET_GAIN:.3f} set for musicnn vectors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
