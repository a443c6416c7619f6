"""Training and applying the LightGBM ranker.

:func:`train_ranker` validates on the time-ordered tail of train (the last ``valid_frac`` of the
rows), trains a starter baseline on the raw columns alongside, scores the oracle when the data
folder holds ``truth_train.csv``, and refits on all of train for the test predictions. The model
folder it writes remembers its data folder, so :func:`predict_test` needs only the folder.

Files of a model folder:

=================  ==============================================================================
model.txt          the booster used for test (the refit one, or the validation one without refit)
model_valid.txt    the booster early-stopped on the validation rows
meta.json          features, categoricals, params, rounds, groups, data folder and fingerprint,
                   package versions
metrics.json       validation, starter and oracle AUC, lift ratio, row counts, timings
importances.csv    gain and split importance of each feature (validation booster)
profiles.npy       with ``--index``: taste profile of every user with a replayed song that has a
                   vector, fitted on all train rows [shape=(n_profiles, dim), float32]
profile_users.json with ``--index``: the ``msno`` of each row of ``profiles.npy``
=================  ==============================================================================

With an index (``train_ranker(..., index_dir=DIR)``) the ``audio`` feature group joins the groups,
and a second booster without it, on the same split and parameters, gives the ablation
``{"with_audio": auc, "without_audio": auc}`` in ``metrics.json``; the model folder remembers the
index folder and the store fingerprint for serving.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from embedding.errors import InputError, MismatchError

from ._log import logger
from .audio import AudioIndex
from .data import KKBoxData, data_fingerprint, load_kkbox
from .features import (
    AUDIO_GROUP,
    DEFAULT_GROUPS,
    FeatureContext,
    SongVectors,
    build_features,
    build_starter_features,
    row_labels,
    taste_profiles,
)

MODEL_FILE = "model.txt"
VALID_MODEL_FILE = "model_valid.txt"
META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
IMPORTANCES_FILE = "importances.csv"
TRUTH_TRAIN_FILE = "truth_train.csv"
PROFILES_FILE = "profiles.npy"
PROFILE_USERS_FILE = "profile_users.json"


@dataclass
class TrainConfig:
    """Options of :func:`train_ranker`; the CLI flags map one to one onto these fields.

    Attributes
    ----------
    valid_frac : float
        Share of train rows, taken from the end (row order is time order), used for validation.
    groups : tuple of str
        Feature groups to build (see :data:`ranking.features.FEATURE_GROUPS`).
    seed : int
        Seed of the folds, the SVD and LightGBM's bagging.
    threads : int
        LightGBM threads; 0 means all cores.
    learning_rate : float
        LightGBM shrinkage.
    max_rounds : int
        Most boosting rounds.
    early_stopping : int
        Rounds without a validation AUC gain before stopping.
    num_leaves : int
        Leaves per tree.
    min_data_in_leaf : int
        Fewest rows per leaf.
    n_folds : int
        Folds of the out-of-fold scheme of label-derived features.
    max_categories : int
        Most levels kept per categorical feature; more levels overfit and slow training.
    svd_rank : int
        Rank of the truncated SVDs of the ``cf`` group.
    refit : bool
        Refit on all of train for the test predictions (when test rows exist).
    starter : bool
        Train the starter baseline on the raw columns too.
    log_every : int
        Log the validation AUC every this many rounds.
    """

    valid_frac: float = 0.2
    groups: tuple[str, ...] = DEFAULT_GROUPS
    seed: int = 0
    threads: int = 0
    learning_rate: float = 0.05
    max_rounds: int = 1000
    early_stopping: int = 50
    num_leaves: int = 31
    min_data_in_leaf: int = 100
    n_folds: int = 5
    max_categories: int = 50
    svd_rank: int = 24
    refit: bool = True
    starter: bool = True
    log_every: int = 50
    extra_params: dict[str, Any] = field(default_factory=dict)


def lgb_params(config: TrainConfig) -> dict[str, Any]:
    """LightGBM parameters for a config: binary objective, AUC metric, native categoricals.

    Parameters
    ----------
    config : TrainConfig
        The training options.

    Returns
    -------
    dict
        Parameters for ``lightgbm.train``.
    """
    params: dict[str, Any] = {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 255,
        "cat_smooth": 10.0,  # pulls rare category levels towards the mean
        "cat_l2": 10.0,
        "max_cat_threshold": 64,
        "num_threads": config.threads or (os.cpu_count() or 1),
        "seed": config.seed,
        "verbosity": -1,
    }
    params.update(config.extra_params)
    return params


def route_lightgbm_logs() -> None:
    """Send LightGBM's messages to the ranking package logger."""
    lgb.register_logger(logger)


def fit_booster(
    X_fit: pd.DataFrame,
    y_fit: np.ndarray,
    params: dict[str, Any],
    *,
    X_valid: pd.DataFrame | None = None,
    y_valid: np.ndarray | None = None,
    categorical: Sequence[str] = (),
    max_rounds: int = 1000,
    early_stopping: int = 50,
    log_every: int = 50,
) -> lgb.Booster:
    """Train a LightGBM booster, early-stopped on validation AUC when validation rows are given.

    Parameters
    ----------
    X_fit : pd.DataFrame
        Training features (float32 and category columns).
    y_fit : ndarray [shape=(n_fit,)]
        Training labels in {0, 1}.
    params : dict
        LightGBM parameters (see :func:`lgb_params`).
    X_valid : pd.DataFrame or None, optional (default=None)
        Validation features; None trains ``max_rounds`` rounds without early stopping.
    y_valid : ndarray [shape=(n_valid,)] or None, optional (default=None)
        Validation labels.
    categorical : sequence of str, optional (default=())
        Columns LightGBM treats as categoricals.
    max_rounds : int, optional (default=1000)
        Most boosting rounds.
    early_stopping : int, optional (default=50)
        Rounds without a validation gain before stopping; 0 turns early stopping off.
    log_every : int, optional (default=50)
        Log the evaluation every this many rounds; 0 turns it off.

    Returns
    -------
    lightgbm.Booster
        The trained booster; ``best_iteration`` is set when early stopping ran.
    """
    # datasets share the bin mappers of the fitting rows
    route_lightgbm_logs()
    cats = list(categorical)
    fit_set = lgb.Dataset(X_fit, label=y_fit, categorical_feature=cats, free_raw_data=True)
    valid_sets = []
    callbacks: list[Callable[..., Any]] = []
    if X_valid is not None and y_valid is not None:
        valid_sets.append(lgb.Dataset(X_valid, label=y_valid, reference=fit_set))
        if early_stopping > 0:
            callbacks.append(lgb.early_stopping(early_stopping, first_metric_only=True))
    if log_every > 0 and valid_sets:
        callbacks.append(lgb.log_evaluation(log_every))

    # boost
    return lgb.train(
        params,
        fit_set,
        num_boost_round=max_rounds,
        valid_sets=valid_sets,
        valid_names=["valid"] if valid_sets else None,
        callbacks=callbacks,
    )


def auc(y: np.ndarray, score: Any) -> float | None:
    """ROC AUC of ``score`` against labels ``y``; None when ``y`` holds a single class."""
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, score))


def lift_ratio(value: float | None, oracle: float | None) -> float | None:
    """``(value - 0.5) / (oracle - 0.5)``, or None when either is missing or the oracle is 0.5."""
    if value is None or oracle is None or abs(oracle - 0.5) < 1e-12:
        return None
    return (value - 0.5) / (oracle - 0.5)


def read_truth(folder: Path, n_train: int) -> np.ndarray | None:
    """``p_true`` of each train row from ``folder/truth_train.csv``, or None when absent.

    Parameters
    ----------
    folder : Path
        The data folder.
    n_train : int
        Number of train rows the truth must align with.

    Returns
    -------
    ndarray [shape=(n_train,), dtype=float64] or None
        The true replay probability of each train row.

    Raises
    ------
    InputError
        If the file lacks a ``p_true`` column, its row count differs from train's, or a value is
        outside [0, 1].
    """
    # absent truth is normal for real data
    path = Path(folder) / TRUTH_TRAIN_FILE
    if not path.is_file():
        return None
    truth = pd.read_csv(path)
    if "p_true" not in truth.columns:
        raise InputError(
            f"{path}: column='p_true' is missing, found {list(truth.columns)}; the truth file "
            "must hold one p_true column row-aligned with train.csv"
        )

    # one probability per train row
    p_true = truth["p_true"].to_numpy(dtype=np.float64)
    if p_true.shape[0] != n_train:
        raise InputError(
            f"{path}: n_rows={p_true.shape[0]} but train.csv has n_rows={n_train}; the truth "
            "file must be row-aligned with train.csv (regenerate both together)"
        )
    if not np.all((p_true >= 0) & (p_true <= 1)):
        raise InputError(f"{path}: p_true holds values outside [0, 1]; expected probabilities")
    return p_true


def _versions() -> dict[str, str]:
    """Versions of the packages that shape a model."""
    import scipy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lightgbm": lgb.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
    }


def _split(data: KKBoxData, valid_frac: float) -> int:
    """Number of fitting rows: train minus the last ``valid_frac`` of it."""
    n_train = len(data.train)
    if not 0.0 < valid_frac < 1.0:
        raise InputError(f"valid_frac={valid_frac}: expected a share strictly between 0 and 1")
    n_fit = int(round(n_train * (1.0 - valid_frac)))
    if n_fit < 10 or n_train - n_fit < 10:
        raise InputError(
            f"n_train_rows={n_train} with valid_frac={valid_frac} leaves n_fit={n_fit} and "
            f"n_valid={n_train - n_fit}; need at least 10 of each, so give more train rows"
        )
    return n_fit


def _importances(booster: lgb.Booster) -> pd.DataFrame:
    """Gain and split importance per feature, by decreasing gain."""
    frame = pd.DataFrame(
        {
            "feature": booster.feature_name(),
            "gain": booster.feature_importance("gain"),
            "split": booster.feature_importance("split"),
        }
    )
    return frame.sort_values("gain", ascending=False).reset_index(drop=True)


def train_ranker(
    data_folder: str | Path,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    data: KKBoxData | None = None,
    index_dir: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train the ranker with a time-ordered validation, the starter baseline and the refit.

    Parameters
    ----------
    data_folder : str or Path
        Folder of the KKBox CSVs (and, for a synthetic world, ``truth_train.csv``).
    out : str or Path
        Model folder to write (created when absent).
    config : TrainConfig or None, optional (default=None)
        Training options; None uses the defaults.
    data : KKBoxData or None, optional (default=None)
        The already loaded data of ``data_folder``; None loads it.
    index_dir : str or Path or None, optional (default=None)
        A ``build-index`` folder: adds the ``audio`` group, the ablation without it and the
        serving profiles. None trains without audio.
    show_progress : bool, optional (default=True)
        Show tqdm bars while loading.

    Returns
    -------
    dict
        The metrics also written to ``metrics.json``: ``valid_auc``, ``starter_auc``,
        ``oracle_auc``, ``lift_ratio``, ``starter_lift_ratio``, ``n_fit_rows``,
        ``n_valid_rows``, ``n_test_rows``, ``best_iteration``, ``refit_rounds``,
        ``feature_groups``, ``seconds``, ``stage_seconds``, ``audio_coverage`` and
        ``ablation`` (``{"with_audio": auc, "without_audio": auc}`` with an index, else None).

    Raises
    ------
    InputError
        If the data or the truth file is malformed, the split leaves too few rows, or the
        ``audio`` group is asked for without an index.
    MismatchError
        If the index's store changed since the index was built, or holds none of the songs.

    Examples
    --------
    >>> train_ranker("demo/data", "models/ranker", index_dir="demo/index")  # doctest: +SKIP
    """
    # load and split by time
    config = config or TrainConfig()
    started = time.perf_counter()
    stages: dict[str, float] = {}
    folder = Path(data_folder).expanduser().resolve()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_kkbox(folder, show_progress=show_progress)
    n_train = len(data.train)
    n_test = 0 if data.test is None else len(data.test)
    n_fit = _split(data, config.valid_frac)
    y = data.train["target"].to_numpy(dtype=np.float64)
    truth = read_truth(folder, n_train)

    # the audio vectors when an index is given; the audio group needs them
    audio = None if index_dir is None else AudioIndex.load(index_dir)
    vectors = None if audio is None else audio.song_vectors(data)
    groups = tuple(config.groups)
    if audio is not None and AUDIO_GROUP not in groups:
        groups = (*groups, AUDIO_GROUP)
    if audio is None and AUDIO_GROUP in groups:
        raise InputError(
            f"groups={list(groups)} include {AUDIO_GROUP!r} but no index was given; pass "
            "--index DIR (a build-index folder) or leave audio out of --groups"
        )
    config = replace(config, groups=groups)
    stages["load"] = time.perf_counter() - started
    logger.info(
        "split: %d fitting rows, %d validation rows, %d test rows", n_fit, n_train - n_fit, n_test
    )

    # features with statistics from the fitting rows only
    mark = time.perf_counter()
    features_for = partial(
        build_features,
        data,
        groups=config.groups,
        n_folds=config.n_folds,
        max_categories=config.max_categories,
        svd_rank=config.svd_rank,
        seed=config.seed,
        cache={},  # label-free groups are built once and reused by the refit
        song_vectors=vectors,
    )
    feats = features_for(fit_mask=np.arange(n_train) < n_fit)
    stages["features"] = time.perf_counter() - mark
    logger.info("features: %d columns in %.1f s", len(feats.feature_names), stages["features"])

    # the ranker, early-stopped on the validation tail
    mark = time.perf_counter()
    params = lgb_params(config)
    booster, best, valid_auc = _fit_valid(feats.X, y, n_fit, feats.categorical_names, config)
    stages["train"] = time.perf_counter() - mark
    logger.info("ranker: valid AUC %s after %d rounds", _fmt(valid_auc), best)

    # the ablation: the same booster without the audio columns
    mark = time.perf_counter()
    ablation = None
    audio_coverage = None
    if audio is not None:
        audio_columns = [c for c in feats.feature_names if c.startswith("audio_")]
        audio_coverage = float(np.isfinite(feats.X["audio_dot"].to_numpy()[:n_train]).mean())
        kept = [c for c in feats.feature_names if c not in audio_columns]
        _, _, without_auc = _fit_valid(
            feats.X[kept], y, n_fit, [c for c in feats.categorical_names if c in kept], config
        )
        ablation = {"with_audio": valid_auc, "without_audio": without_auc}
        logger.info(
            "ablation: valid AUC %s with audio, %s without (audio on %.1f %% of train rows)",
            _fmt(valid_auc),
            _fmt(without_auc),
            100 * audio_coverage,
        )
    stages["ablation"] = time.perf_counter() - mark

    # the starter baseline on raw columns, same split and params
    mark = time.perf_counter()
    starter_auc = None
    if config.starter:
        raw = build_starter_features(data)
        _, _, starter_auc = _fit_valid(raw.X, y, n_fit, raw.categorical_names, config)
        del raw
        logger.info("starter: valid AUC %s", _fmt(starter_auc))
    stages["starter"] = time.perf_counter() - mark

    # the oracle: the true probabilities on the same validation rows
    oracle_auc = None if truth is None else auc(y[n_fit:], truth[n_fit:])
    metrics: dict[str, Any] = {
        "valid_auc": valid_auc,
        "starter_auc": starter_auc,
        "oracle_auc": oracle_auc,
        "lift_ratio": lift_ratio(valid_auc, oracle_auc),
        "starter_lift_ratio": lift_ratio(starter_auc, oracle_auc),
        "n_fit_rows": n_fit,
        "n_valid_rows": n_train - n_fit,
        "n_test_rows": n_test,
        "best_iteration": best,
        "refit_rounds": None,
        "feature_groups": list(config.groups),
        "n_features": len(feats.feature_names),
        "seconds": None,
        "stage_seconds": stages,
        "audio_coverage": audio_coverage,
        "ablation": ablation,
    }
    feature_names, categorical_names = feats.feature_names, feats.categorical_names
    booster.save_model(str(out / VALID_MODEL_FILE), num_iteration=best)
    _importances(booster).to_csv(out / IMPORTANCES_FILE, index=False)
    test_model = "valid"

    # refit on all train with the rounds scaled to the larger set
    mark = time.perf_counter()
    if config.refit and n_test > 0:
        del feats
        rounds = max(1, int(round(best * n_train / n_fit)))
        full = features_for(fit_mask=np.ones(n_train, dtype=bool))
        refit = fit_booster(
            full.X.iloc[:n_train],
            y,
            params,
            categorical=full.categorical_names,
            max_rounds=rounds,
            early_stopping=0,
            log_every=0,
        )
        refit.save_model(str(out / MODEL_FILE))
        metrics["refit_rounds"] = rounds
        test_model = "refit"
        logger.info("refit on %d rows for %d rounds", n_train, rounds)
    else:
        booster.save_model(str(out / MODEL_FILE), num_iteration=best)
    stages["refit"] = time.perf_counter() - mark

    # the serving profiles: every user's replays over all train rows
    if audio is not None and vectors is not None:
        save_profiles(out, data, vectors)

    # record what the folder needs to be applied again
    metrics["seconds"] = time.perf_counter() - started
    meta = {
        "features": feature_names,
        "categorical": categorical_names,
        "params": params,
        "best_iteration": best,
        "refit_rounds": metrics["refit_rounds"],
        "test_model": test_model,
        "groups": list(config.groups),
        "config": asdict(config),
        "data_folder": str(folder),
        "data_fingerprint": data_fingerprint(folder),
        "index_dir": None if audio is None else str(audio.folder),
        "store_fingerprint": None if audio is None else audio.fingerprint,
        "versions": _versions(),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def _fit_valid(
    X: pd.DataFrame, y: np.ndarray, n_fit: int, categorical: Sequence[str], config: TrainConfig
) -> tuple[lgb.Booster, int, float | None]:
    """A booster fitted on the first ``n_fit`` rows, early-stopped on the rest of train.

    Returns the booster, its best round and its validation AUC.
    """
    n_train = y.shape[0]
    booster = fit_booster(
        X.iloc[:n_fit],
        y[:n_fit],
        lgb_params(config),
        X_valid=X.iloc[n_fit:n_train],
        y_valid=y[n_fit:],
        categorical=categorical,
        max_rounds=config.max_rounds,
        early_stopping=config.early_stopping,
        log_every=config.log_every,
    )
    best = int(booster.best_iteration or booster.current_iteration())
    return booster, best, auc(y[n_fit:], booster.predict(X.iloc[n_fit:n_train], num_iteration=best))


def save_profiles(out: Path, data: KKBoxData, vectors: SongVectors) -> int:
    """Write ``profiles.npy`` and ``profile_users.json``: taste profiles from all train replays.

    Parameters
    ----------
    out : Path
        The model folder.
    data : KKBoxData
        The training data.
    vectors : SongVectors
        Song vectors aligned with ``data``.

    Returns
    -------
    int
        Number of users with a profile.
    """
    # the same profiles the audio group fits for rows outside the fitting rows
    ctx = FeatureContext(data=data, labels=row_labels(data), song_vectors=vectors)
    profiles, has = taste_profiles(ctx, np.arange(len(data.train)))

    # only users with a profile, by id
    users = [str(u) for u in data.user_ids[np.flatnonzero(has)]]
    np.save(out / PROFILES_FILE, profiles[has].astype(np.float32))
    (out / PROFILE_USERS_FILE).write_text(json.dumps(users))
    logger.info("saved taste profiles of %d users to %s", len(users), out / PROFILES_FILE)
    return len(users)


def _fmt(value: float | None) -> str:
    """A metric for the log: four decimals, or "n/a"."""
    return "n/a" if value is None else f"{value:.4f}"


def load_meta(model_dir: str | Path) -> dict[str, Any]:
    """Read ``meta.json`` of a model folder.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`train_ranker`.

    Returns
    -------
    dict
        The metadata.

    Raises
    ------
    InputError
        If the folder or its ``meta.json`` or ``model.txt`` is missing.
    """
    model_dir = Path(model_dir)
    for name in (META_FILE, MODEL_FILE):
        if not (model_dir / name).is_file():
            raise InputError(
                f"model={str(model_dir)!r} lacks {name}; expected a folder written by train-ranker"
            )
    meta: dict[str, Any] = json.loads((model_dir / META_FILE).read_text())
    return meta


def feature_options(meta: dict[str, Any]) -> dict[str, Any]:
    """The :func:`build_features` options a model was trained with, from its ``meta.json``.

    Parameters
    ----------
    meta : dict
        From :func:`load_meta`.

    Returns
    -------
    dict
        ``groups``, ``n_folds``, ``max_categories``, ``svd_rank`` and ``seed``, to pass as
        keyword arguments.
    """
    config = meta["config"]
    options = {k: config[k] for k in ("n_folds", "max_categories", "svd_rank", "seed")}
    return {"groups": list(meta["groups"]), **options}


def check_data(meta: dict[str, Any]) -> Path:
    """The data folder a model was trained on, after checking it is unchanged.

    Parameters
    ----------
    meta : dict
        Metadata from :func:`load_meta`.

    Returns
    -------
    Path
        The data folder.

    Raises
    ------
    MismatchError
        If the folder's fingerprint differs from the one recorded at training.
    """
    folder = Path(meta["data_folder"])
    now = data_fingerprint(folder)
    if now != meta["data_fingerprint"]:
        raise MismatchError(
            f"data_folder={str(folder)!r} changed since training (fingerprint {now[:12]} != "
            f"{meta['data_fingerprint'][:12]}); retrain with train-ranker on the current data"
        )
    return folder


def model_audio(
    meta: dict[str, Any], data: KKBoxData
) -> tuple[AudioIndex | None, SongVectors | None]:
    """The index and song vectors a model was trained with, or ``(None, None)`` without audio.

    Parameters
    ----------
    meta : dict
        Metadata from :func:`load_meta`.
    data : KKBoxData
        The model's data, whose song codes the vectors follow.

    Returns
    -------
    (AudioIndex or None, SongVectors or None)

    Raises
    ------
    InputError
        If the recorded index folder or its store is gone.
    MismatchError
        If the store's fingerprint differs from the one recorded at training.
    """
    if not meta.get("index_dir"):
        return None, None
    audio = AudioIndex.load(meta["index_dir"], expect_fingerprint=meta.get("store_fingerprint"))
    return audio, audio.song_vectors(data)


def predict_test(model_dir: str | Path, *, show_progress: bool = True) -> pd.DataFrame:
    """Predict the replay probability of every test row with a trained model folder.

    Test features are recomputed with the model's groups, statistics fitted on all train rows.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`train_ranker`.
    show_progress : bool, optional (default=True)
        Show tqdm bars while loading.

    Returns
    -------
    pd.DataFrame
        ``id`` (int32) and ``target`` (probability), one row per test row in file order.

    Raises
    ------
    InputError
        If the folder is incomplete or the data folder has no ``test.csv``.
    MismatchError
        If the data folder changed since training.
    """
    # the model and its data
    meta = load_meta(model_dir)
    folder = check_data(meta)
    data = load_kkbox(folder, show_progress=show_progress)
    if data.test is None or len(data.test) == 0:
        raise InputError(f"data_folder={str(folder)!r} has no test rows to rank")

    # features with statistics from all train rows
    n_train = len(data.train)
    _, vectors = model_audio(meta, data)
    feats = build_features(
        data, fit_mask=np.ones(n_train, dtype=bool), song_vectors=vectors, **feature_options(meta)
    )
    if feats.feature_names != meta["features"]:
        raise MismatchError(
            f"features={len(feats.feature_names)} built now differ from the "
            f"{len(meta['features'])} the model was trained on; retrain with train-ranker"
        )

    # predict
    booster = lgb.Booster(model_file=str(Path(model_dir) / MODEL_FILE))
    score = booster.predict(feats.X.iloc[n_train:])
    return pd.DataFrame({"id": data.test["id"].to_numpy(), "target": score})
