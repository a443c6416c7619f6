"""Unit tests of the leak-free out-of-fold scheme (ranking.oof)."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.errors import InputError
from ranking.oof import Folds, make_folds, out_of_fold, target_rate


@pytest.fixture
def toy(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 rows, 30 keys, the first 300 rows fitting, labels with a key effect."""
    n = 400
    keys = rng.integers(0, 30, size=n)
    labels = (rng.random(n) < 0.2 + 0.6 * (keys % 2)).astype(np.float64)
    labels[300:] = np.nan  # rows outside the fitting set may have no labels at all
    fit_mask = np.arange(n) < 300
    return keys, labels, fit_mask


def test_folds_cover_every_fitting_row_once(toy: tuple[np.ndarray, ...]) -> None:
    _, _, fit_mask = toy
    folds = make_folds(fit_mask, n_folds=5, seed=3)
    assert np.array_equal(folds.fit_mask, fit_mask)
    assert set(np.unique(folds.fold[fit_mask])) == set(range(5))
    assert np.all(folds.fold[~fit_mask] == -1)
    sizes = np.bincount(folds.fold[fit_mask])
    assert sizes.max() - sizes.min() <= 1
    together = np.sort(np.concatenate([folds.fold_rows(k) for k in range(5)]))
    assert np.array_equal(together, np.flatnonzero(fit_mask))


def test_folds_are_seeded(toy: tuple[np.ndarray, ...]) -> None:
    _, _, fit_mask = toy
    a = make_folds(fit_mask, seed=1).fold
    assert np.array_equal(a, make_folds(fit_mask, seed=1).fold)
    assert not np.array_equal(a, make_folds(fit_mask, seed=2).fold)


def test_make_folds_rejects_bad_requests() -> None:
    with pytest.raises(InputError, match="n_folds=1"):
        make_folds(np.ones(10, dtype=bool), n_folds=1)
    with pytest.raises(InputError, match="n_fit_rows=3"):
        make_folds(np.r_[np.ones(3, dtype=bool), np.zeros(5, dtype=bool)], n_folds=5)


def test_out_of_fold_fits_on_the_right_rows(toy: tuple[np.ndarray, ...]) -> None:
    """Record, for every call of apply, which rows the fit saw."""
    _, _, fit_mask = toy
    folds = make_folds(fit_mask, n_folds=4, seed=0)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def fit(rows: np.ndarray):  # type: ignore[no-untyped-def]
        def apply(target: np.ndarray) -> np.ndarray:
            seen.append((rows, target))
            return np.full(target.size, float(rows.size))

        return apply

    out = out_of_fold(fit, folds)
    assert len(seen) == 5
    for rows, target in seen:
        # never fitted on a row it is applied to
        assert not np.intersect1d(rows, target).size
        # fitted on fitting rows only
        assert fit_mask[rows].all()
    # validation / test rows: fitted on ALL fitting rows
    rows, target = seen[-1]
    assert np.array_equal(rows, np.flatnonzero(fit_mask))
    assert np.array_equal(target, np.flatnonzero(~fit_mask))
    assert np.all(out[~fit_mask, 0] == fit_mask.sum())
    assert np.all(out[fit_mask, 0] < fit_mask.sum())


def test_target_rate_ignores_own_label(toy: tuple[np.ndarray, ...]) -> None:
    keys, labels, fit_mask = toy
    folds = make_folds(fit_mask, seed=0)
    base = target_rate(keys, labels, folds)
    for row in (0, 17, 299):
        flipped = labels.copy()
        flipped[row] = 1.0 - flipped[row]
        again = target_rate(keys, flipped, folds)
        assert again[row] == base[row]
        # the flip does move other rows (same key, other folds; and every held-out row)
        assert np.any(again != base)
        assert np.all(
            again[~fit_mask & (keys == keys[row])] != base[~fit_mask & (keys == keys[row])]
        )


def test_target_rate_matches_hand_computation(toy: tuple[np.ndarray, ...]) -> None:
    keys, labels, fit_mask = toy
    folds = make_folds(fit_mask, seed=0)
    m = 5.0
    rate = target_rate(keys, labels, folds, smoothing=m)

    # a fitting row: other folds only
    row = 10
    other = folds.fit_rows(int(folds.fold[row]))
    prior = labels[other].mean()
    same = other[keys[other] == keys[row]]
    expect = (labels[same].sum() + m * prior) / (same.size + m)
    assert rate[row] == pytest.approx(expect, rel=1e-6)

    # a held-out row: all fitting rows
    row = 350
    fit_rows = np.flatnonzero(fit_mask)
    prior = labels[fit_rows].mean()
    same = fit_rows[keys[fit_rows] == keys[row]]
    expect = (labels[same].sum() + m * prior) / (same.size + m)
    assert rate[row] == pytest.approx(expect, rel=1e-6)


def test_target_rate_missing_and_unseen_keys_get_the_prior() -> None:
    keys = np.array([0, 0, 1, 1, 0, 1, -1, 7])
    labels = np.array([1, 1, 0, 0, 1, 0, np.nan, np.nan])
    folds = Folds(fold=np.array([0, 1, 0, 1, 0, 1, -1, -1], dtype=np.int8), n_folds=2)
    rate = target_rate(keys, labels, folds, smoothing=0.0)
    assert rate[6] == pytest.approx(0.5)
    assert rate[7] == pytest.approx(0.5)
    assert rate[0] == pytest.approx(1.0)
    assert rate[2] == pytest.approx(0.0)


def test_target_rate_separates_keys(toy: tuple[np.ndarray, ...]) -> None:
    """The rate carries the planted key effect, so the feature is not trivially constant."""
    keys, labels, fit_mask = toy
    rate = target_rate(keys, labels, make_folds(fit_mask, seed=0), smoothing=2.0)
    assert rate[keys % 2 == 1].mean() > rate[keys % 2 == 0].mean() + 0.2


def test_target_rate_checks_shapes() -> None:
    folds = make_folds(np.ones(10, dtype=bool), n_folds=2)
    with pytest.raises(InputError, match="keys.shape"):
        target_rate(np.zeros(9, dtype=int), np.zeros(10), folds)
