"""Tests of training and applying the ranker (ranking.train, ranking.cli)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_features import tiny_world

from embedding.errors import InputError
from ranking.cli import rank_main, train_main
from ranking.train import (
    IMPORTANCES_FILE,
    META_FILE,
    METRICS_FILE,
    MODEL_FILE,
    VALID_MODEL_FILE,
    lift_ratio,
    read_truth,
)

METRIC_KEYS = {
    "valid_auc",
    "starter_auc",
    "oracle_auc",
    "lift_ratio",
    "n_fit_rows",
    "n_valid_rows",
    "feature_groups",
    "seconds",
    "ablation",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The tiny world trained once through the command line: (data, model, metrics)."""
    folder = tmp_path_factory.mktemp("world") / "data"
    shutil.copytree(tiny_world(tmp_path_factory), folder)
    model = tmp_path_factory.mktemp("model")
    status = train_main([str(folder), "--out", str(model), "--threads", "2", "--log-every", "0"])
    assert status == 0
    return folder, model, json.loads((model / METRICS_FILE).read_text())


def test_train_writes_the_model_folder(trained: tuple[Path, Path, dict]) -> None:
    folder, model, metrics = trained
    for name in (MODEL_FILE, VALID_MODEL_FILE, META_FILE, METRICS_FILE, IMPORTANCES_FILE):
        assert (model / name).is_file(), name
    assert METRIC_KEYS <= set(metrics)
    assert metrics["ablation"] is None
    meta = json.loads((model / META_FILE).read_text())
    assert meta["data_folder"] == str(folder.resolve())
    assert meta["test_model"] == "refit" and meta["refit_rounds"] >= meta["best_iteration"]
    assert set(meta["categorical"]) <= set(meta["features"])
    assert {"lightgbm", "pandas", "numpy"} <= set(meta["versions"])
    importances = pd.read_csv(model / IMPORTANCES_FILE)
    assert list(importances.columns) == ["feature", "gain", "split"]
    assert set(importances["feature"]) == set(meta["features"])


def test_ranker_beats_the_starter(trained: tuple[Path, Path, dict]) -> None:
    _, _, metrics = trained
    assert metrics["valid_auc"] > metrics["starter_auc"]
    assert 0.5 < metrics["valid_auc"] <= metrics["oracle_auc"] + 0.01
    assert metrics["lift_ratio"] == pytest.approx(
        (metrics["valid_auc"] - 0.5) / (metrics["oracle_auc"] - 0.5)
    )


def test_rank_writes_a_submission(
    trained: tuple[Path, Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, model, _ = trained
    out = tmp_path / "sub" / "submission.csv"
    assert rank_main(["--model", str(model), "--submission", str(out)]) == 0
    submission = pd.read_csv(out)
    test = pd.read_csv(folder / "test.csv")
    assert list(submission.columns) == ["id", "target"]
    assert np.array_equal(submission["id"].to_numpy(), test["id"].to_numpy())
    assert submission["target"].between(0, 1).all()
    assert submission["target"].std() > 0
    assert "wrote" in capsys.readouterr().out


def test_rank_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rank_main(["--model", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--submission" in err
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(tmp_path), "--out", str(tmp_path / "m"), "--groups", "nope"])
    assert exit_info.value.code == 2


def test_rank_refuses_a_changed_data_folder(
    trained: tuple[Path, Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, model, _ = trained
    # a model folder pointing at a copy of the data, which then changes
    copy = tmp_path / "data"
    shutil.copytree(folder, copy)
    moved = tmp_path / "model"
    shutil.copytree(model, moved)
    meta = json.loads((moved / META_FILE).read_text())
    meta["data_folder"] = str(copy)
    (moved / META_FILE).write_text(json.dumps(meta))
    with (copy / "members.csv").open("a") as f:
        f.write("\n")
    status = rank_main(["--model", str(moved), "--submission", str(tmp_path / "s.csv")])
    assert status == 1
    assert "changed since training" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_rank_needs_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = rank_main(["--model", str(tmp_path), "--submission", str(tmp_path / "s.csv")])
    assert status == 1
    assert "meta.json" in capsys.readouterr().err


def test_read_truth_checks_alignment(tmp_path: Path) -> None:
    assert read_truth(tmp_path, 3) is None
    pd.DataFrame({"p_true": [0.1, 0.9]}).to_csv(tmp_path / "truth_train.csv", index=False)
    with pytest.raises(InputError, match="n_rows=2"):
        read_truth(tmp_path, 3)
    pd.DataFrame({"p": [0.1, 0.9, 0.5]}).to_csv(tmp_path / "truth_train.csv", index=False)
    with pytest.raises(InputError, match="p_true"):
        read_truth(tmp_path, 3)
    pd.DataFrame({"p_true": [0.1, 0.9, 0.5]}).to_csv(tmp_path / "truth_train.csv", index=False)
    assert np.allclose(read_truth(tmp_path, 3), [0.1, 0.9, 0.5])


def test_lift_ratio() -> None:
    assert lift_ratio(0.7, 0.9) == pytest.approx(0.5)
    assert lift_ratio(0.7, None) is None
    assert lift_ratio(None, 0.9) is None


@pytest.mark.slow
def test_train_on_the_real_sample(shared_dir: Path, tmp_path: Path) -> None:
    status = train_main(
        [
            str(shared_dir / "kkbox-sample"),
            "--out",
            str(tmp_path),
            "--threads",
            "2",
            "--log-every",
            "0",
            "--no-refit",
        ]
    )
    assert status == 0
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["valid_auc"] > 0.6 and metrics["starter_auc"] > 0.5
    assert metrics["oracle_auc"] is None and metrics["lift_ratio"] is None


def test_index_adds_audio_ablation_and_profiles(tmp_path_factory: pytest.TempPathFactory) -> None:
    from test_recommend import model_with_index

    from ranking.cli import _summary
    from ranking.train import PROFILE_USERS_FILE, PROFILES_FILE

    _, model = model_with_index(tmp_path_factory)
    metrics = json.loads((model / METRICS_FILE).read_text())
    meta = json.loads((model / META_FILE).read_text())

    # the ablation: both AUCs, on the same validation rows
    assert set(metrics["ablation"]) == {"with_audio", "without_audio"}
    assert metrics["ablation"]["with_audio"] == metrics["valid_auc"]
    assert 0.5 < metrics["ablation"]["without_audio"] < 1.0
    assert "audio: valid AUC with / without" in _summary(metrics)
    assert 0.9 < metrics["audio_coverage"] <= 1.0

    # the audio columns, the index and the serving profiles
    assert "audio" in meta["groups"] and {"audio_dot", "audio_contrast"} <= set(meta["features"])
    assert Path(meta["index_dir"]).is_dir() and len(meta["store_fingerprint"]) == 16
    profiles = np.load(model / PROFILES_FILE)
    users = json.loads((model / PROFILE_USERS_FILE).read_text())
    assert profiles.shape[0] == len(users) > 100 and np.isfinite(profiles).all()


def test_audio_group_needs_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(tmp_path), "--out", str(tmp_path / "m"), "--groups", "counts", "audio"])
    assert exit_info.value.code == 2
    assert "--index" in capsys.readouterr().err


def test_submission_of_an_audio_model(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from test_recommend import model_with_index

    world, model = model_with_index(tmp_path_factory)
    out = tmp_path / "submission.csv"
    assert rank_main(["--model", str(model), "--submission", str(out)]) == 0
    submission = pd.read_csv(out)
    assert len(submission) == len(pd.read_csv(world / "test.csv"))
    assert submission["target"].between(0, 1).all()
