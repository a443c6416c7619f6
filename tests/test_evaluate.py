"""Tests of the offline evaluation (ranking.evaluate and ``rank --evaluate``)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from test_recommend import model_with_index

from ranking.cli import rank_main
from ranking.data import load_kkbox
from ranking.evaluate import PLOTS, cut_to_fitting_rows, ranking_metrics

KEYS = {"auc", "recall_at", "ndcg_at", "map_at", "coverage", "candidate_recall"}
KEYS |= {"cold_start_hit_rate"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict, str]:
    """``rank --evaluate`` run once: (report folder, metrics, stdout)."""
    _, model = model_with_index(tmp_path_factory)
    out = tmp_path_factory.mktemp("report")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = rank_main(["--model", str(model), "--evaluate", "--report", str(out)])
    assert status == 0
    return out, json.loads((out / "metrics.json").read_text()), buffer.getvalue()


def test_report_files(report: tuple[Path, dict, str]) -> None:
    out, _, stdout = report
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    summary = (out / "summary.md").read_text()
    assert "recall / NDCG / MAP @10" in summary
    assert "recall / NDCG / MAP @100" in stdout and "report written to" in stdout


def test_metrics_keys_and_ranges(report: tuple[Path, dict, str]) -> None:
    _, metrics, _ = report
    assert KEYS <= set(metrics)
    for key in ("recall_at", "ndcg_at", "map_at"):
        assert set(metrics[key]) == {"10", "50", "100"}
        assert all(0.0 <= v <= 1.0 for v in metrics[key].values())
    recall = metrics["recall_at"]
    assert recall["10"] <= recall["50"] <= recall["100"] <= metrics["candidate_recall"] + 1e-9
    assert 0.5 < metrics["auc"] < 1.0
    assert 0.0 < metrics["coverage"] <= 1.0
    assert metrics["cold_start_hit_rate"] is None or 0.0 <= metrics["cold_start_hit_rate"] <= 1.0
    assert metrics["n_users"] > 50
    # random top-100 lists out of ~600 songs would recall about a sixth of the replays
    assert recall["100"] > 0.25


def test_evaluate_needs_a_report_folder(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model = model_with_index(tmp_path_factory)
    assert rank_main(["--model", str(model), "--evaluate"]) == 2
    assert "--report" in capsys.readouterr().err


def test_cut_keeps_only_the_fitting_rows(tmp_path_factory: pytest.TempPathFactory) -> None:
    world, _ = model_with_index(tmp_path_factory)
    data = load_kkbox(world, show_progress=False)
    cut = cut_to_fitting_rows(data, 1000)
    assert len(cut.train) == 1000 and cut.test is None
    assert cut.train["msno"].dtype == data.train["msno"].dtype  # same codes
    assert cut.train.equals(data.train.iloc[:1000])


def test_ranking_metrics_by_hand() -> None:
    ranked = [np.array([5, 1, 7, 2]), np.array([3, 4])]
    relevant = [np.array([1, 2]), np.array([9])]
    got = ranking_metrics(ranked, relevant, ks=(2, 4))
    # user 1: hits at ranks 2 and 4; user 2: no hit
    assert got["recall_at"]["2"] == pytest.approx((0.5 + 0.0) / 2)
    assert got["recall_at"]["4"] == pytest.approx((1.0 + 0.0) / 2)
    dcg4 = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3)
    assert got["ndcg_at"]["4"] == pytest.approx(dcg4 / idcg / 2)
    assert got["map_at"]["4"] == pytest.approx((0.5 + 0.5) / 2 / 2)
