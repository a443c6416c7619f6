"""Offline evaluation of the recommender on the validation tail.

:func:`evaluate` judges what ``rank --user`` does, without letting the validation tail leak into
it. The world is cut at the end of the fitting rows (train minus the last ``valid_frac``, the
split of ``train-ranker``): a held-out ranker is trained there, with the model's groups, options
and early-stopped rounds, and the recommender's features, taste profiles, factors and exclusions
come from those rows alone. Neither the validation labels nor the validation plays reach it; the
one thing taken from the tail is the number of boosting rounds, which early stopping chose on it
during training (as for any validation score).

Then, on the validation rows:

``auc``
    Row-level ROC AUC of the held-out ranker scoring every validation row as a query row (the
    features it would have if it alone followed the fitting rows), against its target.
``recall_at``, ``ndcg_at``, ``map_at``
    For every user with a replay (target 1) in the validation rows and plays in the fitting
    rows, the ranked top ``K`` of :meth:`~ranking.recommend.Recommender.rank_users` against those
    held-out replays; binary relevance, mean over users; ``K`` in 10, 50, 100 (keys are strings).
``coverage``
    Share of the catalogue (songs of ``songs.csv``) in at least one user's top 10.
``candidate_recall``
    Share of the held-out replays that the candidate stage proposed at all.
``cold_start_hit_rate``
    Share of the held-out replays of songs never played in the fitting rows that reach the
    user's top 100 (None when there are none).

:func:`write_report` writes ``metrics.json``, ``summary.md`` and four plots (ROC curve, feature
importance, audio ablation, recall@K curve) into a folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve
from tqdm.auto import tqdm

from embedding.errors import InputError

from ._log import logger
from .data import KKBoxData, load_kkbox
from .features import QUERY_COLUMNS, build_features
from .recommend import Ranked, Recommender, RecommenderConfig
from .train import (
    METRICS_FILE,
    TrainConfig,
    auc,
    check_data,
    feature_options,
    fit_booster,
    lgb_params,
    load_meta,
    model_audio,
)

KS = (10, 50, 100)
COVERAGE_K = 10
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)
HELDOUT_MODEL_FILE = "model_heldout.txt"
PLOTS = ("roc.png", "importance.png", "ablation.png", "recall_at_k.png")


@dataclass
class Evaluation:
    """What :func:`evaluate` measured, with what the plots need.

    Attributes
    ----------
    metrics : dict
        The content of ``metrics.json`` (see the module notes for the keys).
    roc : tuple of ndarray
        False and true positive rates of the row-level scores.
    recall_curve : dict of int to float
        Mean recall at each K of :data:`CURVE_KS`.
    importance : pd.DataFrame
        ``feature``, ``gain`` of the held-out ranker, by decreasing gain.
    ablation : dict or None
        The model's ``{"with_audio": auc, "without_audio": auc}`` from training.
    booster : lightgbm.Booster
        The held-out ranker.
    """

    metrics: dict[str, Any]
    roc: tuple[np.ndarray, np.ndarray]
    recall_curve: dict[int, float]
    importance: pd.DataFrame
    ablation: dict[str, float] | None
    booster: lgb.Booster


def cut_to_fitting_rows(data: KKBoxData, n_fit: int) -> KKBoxData:
    """The data as it was at the end of the fitting rows: the first ``n_fit`` train rows, no test.

    Parameters
    ----------
    data : KKBoxData
        The full data.
    n_fit : int
        Number of fitting rows.

    Returns
    -------
    KKBoxData
        Same catalogue, members and code sets (the categoricals keep their categories).
    """
    train = data.train.iloc[:n_fit].reset_index(drop=True)
    return KKBoxData(
        train=train,
        test=None,
        songs=data.songs,
        members=data.members,
        extra=data.extra,
        folder=data.folder,
    )


def fit_heldout(cut: KKBoxData, meta: dict[str, Any], *, audio_vectors: Any = None) -> lgb.Booster:
    """Train the ranker on the cut data with the model's groups, options and best rounds.

    Parameters
    ----------
    cut : KKBoxData
        The data cut to the fitting rows (:func:`cut_to_fitting_rows`).
    meta : dict
        The model's ``meta.json``.
    audio_vectors : SongVectors or None, optional (default=None)
        Song vectors aligned with ``cut``, for models with the audio group.

    Returns
    -------
    lightgbm.Booster
    """
    # features of the cut world, labels of all its rows fitted out of fold
    feats = build_features(
        cut,
        fit_mask=np.ones(len(cut.train), dtype=bool),
        song_vectors=audio_vectors,
        **feature_options(meta),
    )

    # the rounds early stopping chose on the same rows
    config = meta["config"]
    train_config = TrainConfig(**{**config, "groups": tuple(config["groups"])})
    return fit_booster(
        feats.X,
        cut.train["target"].to_numpy(dtype=np.float64),
        lgb_params(train_config),
        categorical=feats.categorical_names,
        max_rounds=int(meta["best_iteration"]),
        early_stopping=0,
        log_every=0,
    )


def ranking_metrics(
    ranked: list[np.ndarray], relevant: list[np.ndarray], ks: tuple[int, ...] = KS
) -> dict[str, dict[str, float]]:
    """Mean recall@K, NDCG@K and MAP@K over users, with binary relevance.

    Parameters
    ----------
    ranked : list of ndarray
        Each user's recommended song codes, best first.
    relevant : list of ndarray
        Each user's held-out songs (at least one).
    ks : tuple of int, optional (default=KS)
        Cut-offs.

    Returns
    -------
    dict
        ``{"recall_at": {"10": ...}, "ndcg_at": {...}, "map_at": {...}}``; AP@K is normalised
        by ``min(n_relevant, K)``.

    Examples
    --------
    >>> ranking_metrics([np.array([3, 1, 2])], [np.array([1])], ks=(2,))["ndcg_at"]["2"]
    0.6309297535714575
    """
    out: dict[str, dict[str, float]] = {"recall_at": {}, "ndcg_at": {}, "map_at": {}}
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    for k in ks:
        recall, ndcg, ap = [], [], []
        for songs, rel in zip(ranked, relevant, strict=True):
            hits = np.isin(songs[:k], rel).astype(np.float64)
            n_rel = rel.size
            recall.append(hits.sum() / n_rel)
            ideal = discounts[: min(n_rel, k)].sum()
            ndcg.append(float((hits * discounts[: hits.size]).sum() / ideal))
            precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
            ap.append(float((precision * hits).sum() / min(n_rel, k)))
        out["recall_at"][str(k)] = float(np.mean(recall)) if recall else 0.0
        out["ndcg_at"][str(k)] = float(np.mean(ndcg)) if ndcg else 0.0
        out["map_at"][str(k)] = float(np.mean(ap)) if ap else 0.0
    return out


def evaluate(
    model_dir: str | Path,
    *,
    config: RecommenderConfig | None = None,
    max_users: int | None = None,
    show_progress: bool = True,
) -> Evaluation:
    """Evaluate a model folder's recommendations on its validation tail, leak-free.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by ``train-ranker``.
    config : RecommenderConfig or None, optional (default=None)
        Candidate sizes; None uses the defaults.
    max_users : int or None, optional (default=None)
        Evaluate at most this many users (an evenly spaced subset); None takes all.
    show_progress : bool, optional (default=True)
        Show a tqdm bar over the users.

    Returns
    -------
    Evaluation

    Raises
    ------
    InputError
        If the model folder is incomplete or the validation tail holds no replay to find.
    MismatchError
        If the data or the embedding store changed since training.

    Examples
    --------
    >>> write_report(evaluate("models/ranker"), "reports/ranker")  # doctest: +SKIP
    """
    # the model and the world cut at the end of its fitting rows
    started = time.perf_counter()
    model_dir = Path(model_dir)
    meta = load_meta(model_dir)
    data = load_kkbox(check_data(meta), show_progress=False)
    n_train = len(data.train)
    n_fit = int(round(n_train * (1.0 - float(meta["config"]["valid_frac"]))))
    cut = cut_to_fitting_rows(data, n_fit)
    audio, cut_vectors = model_audio(meta, cut)

    # a ranker and a recommender that know the fitting rows only
    mark = time.perf_counter()
    booster = fit_heldout(cut, meta, audio_vectors=cut_vectors)
    recommender = Recommender.from_parts(
        cut, booster, meta, audio=audio, vectors=cut_vectors, config=config
    )
    logger.info("held-out ranker and recommender ready in %.1f s", time.perf_counter() - mark)

    # row-level: every validation row scored as a query row
    valid = data.train.iloc[n_fit:].reset_index(drop=True)
    y_valid = valid["target"].to_numpy(dtype=np.float64)
    scores = np.concatenate(
        [
            recommender.score_rows(valid.iloc[lo : lo + 20_000][list(QUERY_COLUMNS)])
            for lo in range(0, len(valid), 20_000)
        ]
    )
    row_auc = auc(y_valid, scores)
    fpr, tpr, _ = (
        roc_curve(y_valid, scores) if row_auc is not None else (np.r_[0, 1], np.r_[0, 1], 0)
    )

    # held-out replays of users the fitting rows know
    replays = valid.loc[valid["target"] == 1, ["msno", "song_id"]]
    users = replays["msno"].cat.codes.to_numpy().astype(np.int64)
    songs = replays["song_id"].cat.codes.to_numpy().astype(np.int64)
    fit_users = np.unique(cut.train["msno"].cat.codes.to_numpy())
    warm = np.isin(users, fit_users)
    if not warm.any():
        raise InputError(
            f"model={str(model_dir)!r}: the validation rows hold no replay of a user with "
            "fitting rows; nothing to evaluate (lower --valid-frac or give more data)"
        )
    order = np.argsort(users[warm], kind="stable")
    eval_users, starts = np.unique(users[warm][order], return_index=True)
    relevant = np.split(songs[warm][order], starts[1:])
    if max_users is not None and eval_users.size > max_users:
        pick = np.linspace(0, eval_users.size - 1, max_users).round().astype(int)
        eval_users = eval_users[pick]
        relevant = [relevant[i] for i in pick]

    # rank everyone, in batches
    mark = time.perf_counter()
    ranked: list[Ranked] = []
    batch = 64
    bar = tqdm(total=eval_users.size, desc="evaluate", unit="user", disable=not show_progress)
    for lo in range(0, eval_users.size, batch):
        part = eval_users[lo : lo + batch].tolist()
        ranked.extend(recommender.rank_users(part, max(KS), batch=batch))
        bar.update(len(part))
    bar.close()
    rank_seconds = time.perf_counter() - mark

    # ranking quality, candidates, coverage, cold songs
    tops = [r.songs for r in ranked]
    metrics: dict[str, Any] = {"auc": row_auc}
    metrics.update(ranking_metrics(tops, relevant))
    curve = ranking_metrics(tops, relevant, ks=CURVE_KS)["recall_at"]
    n_relevant = sum(r.size for r in relevant)
    found = sum(
        int(np.isin(rel, r.candidates).sum()) for rel, r in zip(relevant, ranked, strict=True)
    )
    catalogue = np.unique(data.songs["song_id"].cat.codes.to_numpy())
    shown = np.unique(np.concatenate([t[:COVERAGE_K] for t in tops])) if tops else np.empty(0)
    played_before = np.unique(cut.train["song_id"].cat.codes.to_numpy())
    cold = [np.setdiff1d(rel, played_before) for rel in relevant]
    n_cold = sum(c.size for c in cold)
    cold_hits = sum(int(np.isin(c, t[:100]).sum()) for c, t in zip(cold, tops, strict=True))
    metrics.update(
        {
            "coverage": float(np.isin(catalogue, shown).mean()) if catalogue.size else 0.0,
            "coverage_k": COVERAGE_K,
            "candidate_recall": found / n_relevant if n_relevant else 0.0,
            "cold_start_hit_rate": cold_hits / n_cold if n_cold else None,
            "n_cold_start_replays": n_cold,
            "n_users": int(eval_users.size),
            "n_users_without_fitting_rows": int(np.unique(users[~warm]).size),
            "n_relevant": int(n_relevant),
            "mean_candidates": float(np.mean([r.candidates.size for r in ranked])),
            "n_valid_rows": len(valid),
            "n_fit_rows": n_fit,
            "train_valid_auc": _train_metric(model_dir, "valid_auc"),
            "ms_per_user": 1000.0 * rank_seconds / max(eval_users.size, 1),
            "seconds": time.perf_counter() - started,
        }
    )
    importance = pd.DataFrame(
        {"feature": booster.feature_name(), "gain": booster.feature_importance("gain")}
    ).sort_values("gain", ascending=False, ignore_index=True)
    ablation = _train_metric(model_dir, "ablation")
    return Evaluation(
        metrics=metrics,
        roc=(np.asarray(fpr), np.asarray(tpr)),
        recall_curve={int(k): v for k, v in curve.items()},
        importance=importance,
        ablation=ablation if isinstance(ablation, dict) else None,
        booster=booster,
    )


def _train_metric(model_dir: Path, key: str) -> Any:
    """One value of the model's training ``metrics.json``, None when absent."""
    path = model_dir / METRICS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get(key)


def write_report(evaluation: Evaluation, out: str | Path) -> Path:
    """Write ``metrics.json``, ``summary.md``, the held-out ranker and the four plots.

    Parameters
    ----------
    evaluation : Evaluation
        From :func:`evaluate`.
    out : str or Path
        Report folder (created).

    Returns
    -------
    Path
        The folder.
    """
    # numbers and the held-out ranker
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
    (out / "summary.md").write_text(summary_markdown(evaluation.metrics) + "\n")
    evaluation.booster.save_model(str(out / HELDOUT_MODEL_FILE))

    # plots, without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = evaluation.roc
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"held-out ranker (AUC {_fmt(evaluation.metrics['auc'])})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, validation rows")
    ax.legend(loc="lower right")
    _save(fig, out / "roc.png")

    top = evaluation.importance.head(25).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.barh(top["feature"], top["gain"])
    ax.set(xlabel="total gain", title="feature importance (held-out ranker)")
    _save(fig, out / "importance.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    if evaluation.ablation:
        names = ["without audio", "with audio"]
        values = [evaluation.ablation["without_audio"], evaluation.ablation["with_audio"]]
        ax.bar(names, values, color=["grey", "tab:blue"])
        low = min(values) - 0.02
        ax.set_ylim(max(0.5, low), max(values) + 0.01)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.4f}", ha="center", va="bottom")
        ax.set(ylabel="validation AUC", title="audio ablation (train-ranker)")
    else:
        ax.text(0.5, 0.5, "no ablation: trained without --index", ha="center", va="center")
        ax.set_axis_off()
    _save(fig, out / "ablation.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted(evaluation.recall_curve)
    ax.plot(ks, [evaluation.recall_curve[k] for k in ks], marker="o", label="ranked top K")
    ax.axhline(
        evaluation.metrics["candidate_recall"], color="grey", linestyle="--", label="candidates"
    )
    ax.set(xlabel="K", ylabel="recall of held-out replays", title="recall@K")
    ax.legend(loc="lower right")
    _save(fig, out / "recall_at_k.png")
    return out


def _save(fig: Any, path: Path) -> None:
    """Save and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _fmt(value: Any) -> str:
    """Four decimals, or n/a."""
    return "n/a" if value is None else f"{value:.4f}"


def summary_markdown(metrics: dict[str, Any]) -> str:
    """A short Markdown report of the evaluation metrics.

    Parameters
    ----------
    metrics : dict
        The ``metrics`` of an :class:`Evaluation`.

    Returns
    -------
    str
    """
    lines = [
        "# Recommendation evaluation (validation tail, held-out ranker)",
        "",
        f"{metrics['n_users']} users with held-out replays ({metrics['n_relevant']} replays), "
        f"{metrics['n_fit_rows']} fitting rows, {metrics['n_valid_rows']} validation rows.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| row AUC (query rows) | {_fmt(metrics['auc'])} |",
        f"| row AUC at training (observed rows) | {_fmt(metrics['train_valid_auc'])} |",
    ]
    for k in KS:
        key = str(k)
        lines.append(
            f"| recall / NDCG / MAP @{k} | {_fmt(metrics['recall_at'][key])} / "
            f"{_fmt(metrics['ndcg_at'][key])} / {_fmt(metrics['map_at'][key])} |"
        )
    lines += [
        f"| candidate recall ({metrics['mean_candidates']:.0f} per user) | "
        f"{_fmt(metrics['candidate_recall'])} |",
        f"| catalogue coverage (top {metrics['coverage_k']}) | {_fmt(metrics['coverage'])} |",
        f"| cold-start hit rate @100 ({metrics['n_cold_start_replays']} replays) | "
        f"{_fmt(metrics['cold_start_hit_rate'])} |",
        f"| ranking time per user | {metrics['ms_per_user']:.1f} ms |",
    ]
    return "\n".join(lines)
