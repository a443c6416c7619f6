"""Measure the audio ablation on demo worlds: validation AUC with and without the audio group.

For each world seed it runs the README demo's chain: ``make_demo_world.py --audio``,
``embed-audio --encoder musicnn``, ``build-index`` and ``train-ranker --index`` (without the refit
and the starter baseline, which do not change the ablation), then reads ``ablation`` and the lift
ratio from the model's ``metrics.json``. With ``--vectors true-style`` the song vectors are the
world's true audible style (``song_style.csv``) instead of musicnn's: what the same audio columns
could add if an encoder heard the rendered style perfectly, the ceiling of the feature on that
world.

Prints a Markdown table (seed, AUC with and without audio, gain, lift ratio) and the mean gain;
the project aims for a mean gain of at least 0.005 over seeds 0, 1 and 2. Each seed's folder
keeps its world, store, index and model; a rerun with the same ``--work`` reuses every seed that
finished, so an interrupted run loses at most the seed in flight.

    .venv/bin/python scripts/audio_ablation.py                        # seeds 0 1 2, musicnn
    .venv/bin/python scripts/audio_ablation.py --vectors true-style   # the ceiling
    .venv/bin/python scripts/audio_ablation.py --seeds 0 --work runs/ablation
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


def one_seed(seed: int, vectors: str, folder: Path, scale: str) -> dict[str, Any]:
    """Build one world's chain in ``folder`` (or reuse a finished one) and return its figures.

    Parameters
    ----------
    seed : int
        Seed of the demo world.
    vectors : str
        ``musicnn`` (rendered clips through embed-audio) or ``true-style`` (``song_style.csv``).
    folder : Path
        The seed's folder: world, ``embeddings``, ``index`` and ``model`` go below it.
    scale : str
        Size of the world (``make_demo_world.py --scale``).

    Returns
    -------
    dict
        ``seed``, ``with_audio``, ``without_audio``, ``gain`` and ``lift_ratio``.
    """
    # a finished seed is read back; anything else starts afresh
    metrics_path = folder / "model" / "metrics.json"
    if not metrics_path.exists():
        shutil.rmtree(folder, ignore_errors=True)
        world = [sys.executable, str(REPO / "scripts" / "make_demo_world.py"), "--out", str(folder)]
        world += ["--scale", scale, "--seed", str(seed)]
        run(world + (["--audio"] if vectors == "musicnn" else []))

        # the song vectors, their index, the ranker with the audio group
        store = folder / "embeddings"
        if vectors == "musicnn":
            manifest = str(folder / "audio" / "manifest.csv")
            embed = [tool("embed-audio"), "--manifest", manifest, "--out", str(store)]
            run(embed + ["--encoder", "musicnn"])
        else:
            true_style_store(folder, store)
        run([tool("build-index"), str(store), "--out", str(folder / "index")])
        train = [tool("train-ranker"), str(folder / "data"), "--index", str(folder / "index")]
        run(train + ["--out", str(folder / "model"), "--no-refit", "--no-starter"])

    # the figures of its metrics.json
    metrics = json.loads(metrics_path.read_text())
    ablation = metrics["ablation"]
    return {
        "seed": seed,
        "with_audio": ablation["with_audio"],
        "without_audio": ablation["without_audio"],
        "gain": ablation["with_audio"] - ablation["without_audio"],
        "lift_ratio": metrics.get("lift_ratio"),
    }


def table(rows: list[dict[str, Any]], vectors: str) -> str:
    """The Markdown table of the seeds and the mean gain."""
    lines = [
        f"| world seed ({vectors}) | with audio | without | gain | lift ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lift = "" if row["lift_ratio"] is None else f"{row['lift_ratio']:.3f}"
        lines.append(
            f"| {row['seed']} | {row['with_audio']:.4f} | {row['without_audio']:.4f} "
            f"| {row['gain']:+.4f} | {lift} |"
        )
    mean = sum(row["gain"] for row in rows) / len(rows)
    lines.append(f"| mean | | | {mean:+.4f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="world seeds")
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
                seed, args.vectors, work / f"{args.vectors}-{args.scale}-seed{seed}", args.scale
            )
            for seed in args.seeds
        ]
    finally:
        if tmp is not None:
            tmp.cleanup()

    # the table, and the mean gain against the project's aim
    print(table(rows, args.vectors))
    mean = sum(row["gain"] for row in rows) / len(rows)
    verdict = "meets" if mean >= TARGET_GAIN else "is below"
    print(
        f"\nmean gain {mean:+.4f}: {verdict} the aim of +{TARGET_GAIN:.3f} set for musicnn vectors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
