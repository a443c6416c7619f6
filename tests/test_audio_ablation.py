"""Tests of ``scripts/audio_ablation.py`` on the tiny world with its true-style vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedding import load_store

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "audio_ablation.py"


def _ablation(work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--scale", "tiny", "--seeds", "0"]
    cmd += ["--vectors", "true-style", "--work", str(work), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("ablation")
    return work, _ablation(work)


def test_table_matches_the_model_metrics(
    run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    work, result = run
    metrics = json.loads((work / "true-style-tiny-seed0" / "model" / "metrics.json").read_text())
    with_audio = metrics["ablation"]["with_audio"]
    without = metrics["ablation"]["without_audio"]
    assert 0.5 < with_audio < 1.0 and 0.5 < without < 1.0

    # stdout is the table alone: header, rule, the seed, the mean, then the verdict
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| world seed (true-style) |")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:4] == ["0", f"{with_audio:.4f}", f"{without:.4f}", f"{with_audio - without:+.4f}"]
    assert lines[3].startswith("| mean |")
    assert f"mean gain {with_audio - without:+.4f}" in lines[-1]


def test_store_holds_the_true_style(run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    work, _ = run
    folder = work / "true-style-tiny-seed0"
    style = pd.read_csv(folder / "data" / "song_style.csv")
    store = load_store(folder / "embeddings")
    assert store.meta["encoder"] == "true-style"
    rows = [store.row_of(song_id) for song_id in style["song_id"]]
    np.testing.assert_allclose(
        np.asarray(store.vectors)[rows], style.drop(columns="song_id").to_numpy(), atol=1e-6
    )


def test_rerun_reuses_finished_seeds(run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    work, first = run
    again = _ablation(work)
    assert again.stdout == first.stdout
    assert "make_demo_world.py" not in again.stderr  # no step of the chain ran again


def test_training_seeds_are_averaged_on_the_same_world(
    run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    work, _ = run
    result = _ablation(work, "--train-seeds", "0", "1")
    folder = work / "true-style-tiny-seed0"

    # the world and the seed-0 model are reused; only the seed-1 ranker is trained
    assert "make_demo_world.py" not in result.stderr
    assert result.stderr.count("train-ranker") == 1 and "--seed 1" in result.stderr
    runs = [
        json.loads((folder / name / "metrics.json").read_text())["ablation"]
        for name in ("model", "model-seed1")
    ]
    gains = [r["with_audio"] - r["without_audio"] for r in runs]

    # the row holds the means over both training seeds and lists each seed's gain
    lines = result.stdout.strip().splitlines()
    assert lines[0].endswith("| gain per training seed |")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[1] == f"{np.mean([r['with_audio'] for r in runs]):.4f}"
    assert cells[2] == f"{np.mean([r['without_audio'] for r in runs]):.4f}"
    assert cells[3] == f"{np.mean(gains):+.4f}"
    assert cells[5] == ", ".join(f"{g:+.4f}" for g in gains)
