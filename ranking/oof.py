"""The one leak-free scheme for every feature computed from labels.

A label-derived feature must never see the label of the row it describes. The scheme:

* the **fitting rows** (train minus the validation tail while validating, all of train when
  refitting for test) are dealt into ``n_folds`` seeded folds; a fitting row in fold ``k`` gets
  statistics fitted on the fitting rows of the other folds (out of fold);
* every other row (validation and test) gets statistics fitted on **all** fitting rows;
* leave-one-out is never used: it leaks the row's own label through the subtraction.

:func:`out_of_fold` is the generic driver: it takes a ``fit`` callable ("fit on these rows, return
a function that computes features for those rows") and runs it ``n_folds + 1`` times.
:func:`target_rate` is the workhorse built on it: a smoothed replay rate per integer key, fitted
with ``np.bincount``; :func:`fit_rate` is its fitting step alone, for serving code that looks rates
up for new rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embedding.errors import InputError

# "fit on these row indices" -> "compute features for those row indices"
Applier = Callable[[np.ndarray], np.ndarray]
Fitter = Callable[[np.ndarray], Applier]


@dataclass(frozen=True)
class Folds:
    """Fold assignment of every row: ``fold[i]`` in ``0..n_folds-1`` for fitting rows, -1 else.

    Attributes
    ----------
    fold : ndarray [shape=(n_rows,), dtype=int8]
        Fold of each fitting row, -1 for rows outside the fitting set.
    n_folds : int
        Number of folds.
    """

    fold: np.ndarray
    n_folds: int

    @property
    def fit_mask(self) -> np.ndarray:
        """Boolean mask of the fitting rows."""
        return self.fold >= 0

    def fit_rows(self, k: int | None = None) -> np.ndarray:
        """Indices of the fitting rows, all of them (``k=None``) or those outside fold ``k``."""
        if k is None:
            return np.flatnonzero(self.fold >= 0)
        return np.flatnonzero((self.fold >= 0) & (self.fold != k))

    def fold_rows(self, k: int) -> np.ndarray:
        """Indices of the fitting rows inside fold ``k``."""
        return np.flatnonzero(self.fold == k)

    def other_rows(self) -> np.ndarray:
        """Indices of the rows outside the fitting set (validation and test rows)."""
        return np.flatnonzero(self.fold < 0)


def make_folds(fit_mask: np.ndarray, *, n_folds: int = 5, seed: int = 0) -> Folds:
    """Deal the fitting rows into ``n_folds`` seeded folds of near-equal size.

    Parameters
    ----------
    fit_mask : ndarray [shape=(n_rows,), dtype=bool]
        True for the rows whose labels may be used (the fitting rows).
    n_folds : int, optional (default=5)
        Number of folds; at least 2.
    seed : int, optional (default=0)
        Seed of the shuffle that assigns rows to folds.

    Returns
    -------
    Folds
        The fold of every row (-1 outside the fitting rows).

    Raises
    ------
    InputError
        If ``n_folds < 2`` or there are fewer fitting rows than folds.
    """
    # check the request
    fit_mask = np.asarray(fit_mask, dtype=bool)
    n_fit = int(fit_mask.sum())
    if n_folds < 2:
        raise InputError(f"n_folds={n_folds}: expected at least 2 folds for out-of-fold features")
    if n_fit < n_folds:
        raise InputError(
            f"n_fit_rows={n_fit} is fewer than n_folds={n_folds}; give more fitting rows"
        )

    # a seeded permutation taken modulo n_folds gives balanced folds
    rng = np.random.default_rng(seed)
    fold = np.full(fit_mask.shape[0], -1, dtype=np.int8)
    fold[fit_mask] = (rng.permutation(n_fit) % n_folds).astype(np.int8)
    return Folds(fold=fold, n_folds=n_folds)


def out_of_fold(fit: Fitter, folds: Folds, *, n_cols: int = 1) -> np.ndarray:
    """Run the leak-free scheme with any ``fit`` callable.

    Parameters
    ----------
    fit : callable
        ``fit(rows)`` receives the indices of the rows whose labels it may use and returns
        ``apply(rows)``, which returns an array ``(len(rows),)`` or ``(len(rows), n_cols)`` of
        features for the given rows.
    folds : Folds
        Fold assignment from :func:`make_folds`.
    n_cols : int, optional (default=1)
        Number of feature columns ``apply`` returns.

    Returns
    -------
    ndarray [shape=(n_rows, n_cols), dtype=float32]
        Out-of-fold features for fitting rows, features fitted on all fitting rows for the rest.
    """
    out = np.full((folds.fold.shape[0], n_cols), np.nan, dtype=np.float32)

    # fitting rows: fitted on the other folds only
    for k in range(folds.n_folds):
        rows = folds.fold_rows(k)
        if rows.size:
            out[rows] = np.asarray(fit(folds.fit_rows(k))(rows)).reshape(rows.size, n_cols)

    # validation and test rows: fitted on all fitting rows
    rows = folds.other_rows()
    if rows.size:
        out[rows] = np.asarray(fit(folds.fit_rows())(rows)).reshape(rows.size, n_cols)
    return out


def target_rate(
    keys: np.ndarray,
    labels: np.ndarray,
    folds: Folds,
    *,
    smoothing: float = 20.0,
) -> np.ndarray:
    """Leak-free smoothed label mean per integer key.

    The rate of key ``g`` fitted on rows ``R`` is ``(sum_R y + m * p) / (n_R + m)`` where ``p`` is
    the mean label over ``R`` and ``m`` the smoothing; keys unseen in ``R`` get ``p``.

    Parameters
    ----------
    keys : ndarray [shape=(n_rows,), dtype=int]
        Non-negative integer key of every row (e.g. ``user_code * n_types + type_code``); a
        negative key marks a missing value and gets the prior.
    labels : ndarray [shape=(n_rows,)]
        Labels in {0, 1}; only the fitting rows' labels are read.
    folds : Folds
        Fold assignment from :func:`make_folds`.
    smoothing : float, optional (default=20.0)
        Prior weight ``m``, in pseudo-rows.

    Returns
    -------
    ndarray [shape=(n_rows,), dtype=float32]
        The smoothed rate of each row's key.

    Raises
    ------
    InputError
        If ``keys`` and ``labels`` differ in length from the folds.
    """
    # check shapes
    keys = np.asarray(keys, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.float64)
    n_rows = folds.fold.shape[0]
    if keys.shape != (n_rows,) or labels.shape != (n_rows,):
        raise InputError(
            f"keys.shape={keys.shape}, labels.shape={labels.shape}: expected ({n_rows},) each, "
            "one value per row of the fold assignment"
        )
    n_keys = int(keys.max()) + 1 if keys.size else 0

    # fit = bincount over the allowed rows; apply = lookup by key
    def fit(rows: np.ndarray) -> Applier:
        rate, prior = fit_rate(keys, labels, rows, n_keys=n_keys, smoothing=smoothing)

        def apply(target_rows: np.ndarray) -> np.ndarray:
            k = keys[target_rows]
            return np.where(k >= 0, rate[np.maximum(k, 0)], np.float32(prior))

        return apply

    return out_of_fold(fit, folds)[:, 0]


def fit_rate(
    keys: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    *,
    n_keys: int,
    smoothing: float = 20.0,
) -> tuple[np.ndarray, float]:
    """The smoothed label mean of every key, fitted on the given rows only.

    This is the fitting step of :func:`target_rate`; serving code calls it once with all
    fitting rows and looks rates up for new rows.

    Parameters
    ----------
    keys : ndarray [shape=(n_rows,), dtype=int64]
        Key of every row, negative for a missing value (such rows are not fitted on).
    labels : ndarray [shape=(n_rows,)]
        Labels in {0, 1}; only ``labels[rows]`` is read.
    rows : ndarray [shape=(n_fit,), dtype=int]
        Indices of the rows whose labels may be used.
    n_keys : int
        Number of distinct keys (the length of the returned table).
    smoothing : float, optional (default=20.0)
        Prior weight ``m``, in pseudo-rows.

    Returns
    -------
    rate : ndarray [shape=(n_keys,), dtype=float32]
        ``(sum y + m * prior) / (n + m)`` per key; the prior for keys unseen in ``rows``.
    prior : float
        Mean label over the fitted rows (0.5 when there are none).
    """
    # bincount over the fitted rows with a key
    rows = rows[keys[rows] >= 0]
    y = labels[rows]
    prior = float(y.mean()) if y.size else 0.5
    sums = np.bincount(keys[rows], weights=y, minlength=n_keys)
    counts = np.bincount(keys[rows], minlength=n_keys)

    # shrink towards the prior
    rate = np.full(n_keys, prior, dtype=np.float32)
    seen = counts > 0
    rate[seen] = (sums[seen] + smoothing * prior) / (counts[seen] + smoothing)
    return rate, prior
