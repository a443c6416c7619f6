"""Tests of the group projection (retrieval.projection)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import retrieval.projection as projection
from embedding.errors import InputError
from retrieval import fit_group_projection

N_STYLE = 3


def songs(
    rng: np.random.Generator, *, n_groups: int = 80, per_group: int = 5, n_detail: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors whose style a group shares, beside louder details of each song, in rotated axes.

    Returns the vectors, the group of each song and an orthonormal basis (rows) of the style
    subspace.
    """
    groups = np.repeat(np.arange(n_groups), per_group)
    style = rng.normal(size=(n_groups, N_STYLE))[groups]
    style += 0.3 * rng.normal(size=style.shape)  # each song strays a little from its group
    detail = 3.0 * rng.normal(size=(groups.size, n_detail))  # the recording's own, and louder
    rotation, _ = np.linalg.qr(rng.normal(size=(N_STYLE + n_detail, N_STYLE + n_detail)))
    return np.c_[style, detail] @ rotation, groups, rotation[:N_STYLE]


def share_in(basis: np.ndarray, directions: np.ndarray) -> float:
    """Share of the squared length of ``directions`` (columns) inside the span of ``basis``."""
    inside = basis @ directions
    return float((inside**2).sum() / (directions**2).sum())


def test_the_projection_reads_the_shared_style(rng: np.random.Generator) -> None:
    vectors, groups, basis = songs(rng)
    proj = fit_group_projection(vectors, groups, n_components=N_STYLE)
    assert proj.n_components == N_STYLE and proj.n_groups == 80
    assert share_in(basis, proj.components) > 0.97

    # the check could fail: the strongest directions of plain variance are the details
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    assert share_in(basis, vt[:N_STYLE].T) < 0.3


def test_unshrunk_directions_have_unit_spread_within_groups(rng: np.random.Generator) -> None:
    vectors, groups, _ = songs(rng)
    proj = fit_group_projection(vectors, groups, n_components=5, shrinkage=0.0)
    z = proj.transform(vectors).astype(np.float64)

    # within-group scatter of the projected songs is the identity
    means = np.stack([z[groups == g].mean(axis=0) for g in range(groups.max() + 1)])
    within = z - means[groups]
    np.testing.assert_allclose(within.T @ within / len(z), np.eye(5), atol=1e-4)

    # the ratios are the between-group variances there, strongest first
    between = (means[groups] - z.mean(axis=0)) ** 2
    np.testing.assert_allclose(between.mean(axis=0), proj.ratios, rtol=1e-4)
    assert np.all(np.diff(proj.ratios) <= 0)


def test_songs_outside_groups_and_small_groups_are_left_out(rng: np.random.Generator) -> None:
    vectors, groups, _ = songs(rng)
    base = fit_group_projection(vectors, groups)

    # wild songs in no group, or alone in their group, change nothing
    wild = 100.0 * rng.normal(size=(6, vectors.shape[1]))
    more = fit_group_projection(
        np.r_[vectors, wild], np.r_[groups, [-1, -1, -1, 500, 501, 502]], min_group_size=2
    )
    np.testing.assert_allclose(np.abs(more.components), np.abs(base.components), atol=1e-9)
    np.testing.assert_allclose(more.ratios, base.ratios)


def test_components_are_capped_by_the_number_of_groups(rng: np.random.Generator) -> None:
    vectors, groups, _ = songs(rng, n_groups=3)
    assert fit_group_projection(vectors, groups, n_components=6).n_components == 2


def test_bad_input_is_named(rng: np.random.Generator) -> None:
    vectors, groups, _ = songs(rng)
    with pytest.raises(InputError, match="n_groups=1"):
        fit_group_projection(vectors, np.where(groups == 0, 0, -1))
    with pytest.raises(InputError, match="groups.shape"):
        fit_group_projection(vectors, groups[:-1])
    with pytest.raises(InputError, match="shrinkage=1.0"):
        fit_group_projection(vectors, groups, shrinkage=1.0)
    proj = fit_group_projection(vectors, groups)
    with pytest.raises(InputError, match="vectors.shape"):
        proj.transform(vectors[:, :-1])


def test_a_one_hot_membership_matrix_is_the_same_as_group_codes(
    rng: np.random.Generator,
) -> None:
    vectors, groups, _ = songs(rng)
    one_hot = sp.csr_matrix((np.ones(groups.size), (groups, np.arange(groups.size))))
    by_codes = fit_group_projection(vectors, groups, n_components=5)
    by_matrix = fit_group_projection(vectors, one_hot, n_components=5)
    np.testing.assert_allclose(by_matrix.mean, by_codes.mean, atol=1e-12)
    np.testing.assert_allclose(by_matrix.ratios, by_codes.ratios, rtol=1e-9)
    np.testing.assert_allclose(
        np.abs(by_matrix.components), np.abs(by_codes.components), rtol=1e-6, atol=1e-9
    )


def test_listeners_as_groups_find_the_style_they_choose_by(rng: np.random.Generator) -> None:
    # songs with a style and louder details; no group is given with the songs
    vectors, _, basis = songs(rng, n_groups=400, per_group=1)
    style = vectors @ basis.T

    # each listener plays the songs nearest their taste in style, some of them twice
    taste = rng.normal(size=(300, N_STYLE))
    near = np.argsort(-(taste @ style.T), axis=1)[:, :12]
    listener = np.repeat(np.arange(300), 12)
    plays = sp.csr_matrix(
        (rng.integers(1, 3, size=near.size).astype(float), (listener, near.ravel())),
        shape=(300, len(vectors)),
    )
    proj = fit_group_projection(vectors, plays, n_components=N_STYLE, min_group_size=5)
    assert proj.n_groups == 300 and share_in(basis, proj.components) > 0.9

    # weights must not be negative, and the matrix must have one column per song
    with pytest.raises(InputError, match="negative weight=-2.0"):
        fit_group_projection(vectors, -plays)
    with pytest.raises(InputError, match=r"groups.shape=\(300, 399\)"):
        fit_group_projection(vectors, plays[:, :-1])


def test_transform_streams_in_chunks(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors, groups, _ = songs(rng)
    proj = fit_group_projection(vectors, groups)
    whole = (vectors - proj.mean) @ proj.components
    monkeypatch.setattr(projection, "CHUNK_ROWS", 7)
    np.testing.assert_allclose(proj.transform(vectors), whole, rtol=1e-5, atol=1e-5)
