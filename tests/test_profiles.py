"""Tests of ``retrieval.profiles``: normalisation, mean profiles and row-wise cosine."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.errors import InputError
from retrieval.profiles import cosine, l2_normalize, mean_profiles, profile_dot


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows(rng):
    x = rng.standard_normal((5, 7)) * np.array([[0.1], [1.0], [10.0], [1e3], [0.0]])
    before = x.copy()
    out = l2_normalize(x)
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:4], axis=1), 1.0, rtol=1e-6)
    assert (out[4] == 0).all()


def test_profile_is_mean_of_unit_vectors(rng):
    vectors = rng.standard_normal((6, 4)).astype(np.float32)
    # user 0 likes songs 0 and 3 (song 3 given twice), user 1 likes song 5
    users = np.array([0, 0, 0, 1])
    rows = np.array([0, 3, 3, 5])
    profiles, has = mean_profiles(
        users, rows, 2, vectors * np.array([[1], [2], [3], [50], [5], [9]])
    )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(profiles[0], (unit[0] + unit[3]) / 2, rtol=1e-5)
    np.testing.assert_allclose(profiles[1], unit[5], rtol=1e-5)
    assert has.tolist() == [True, True]


def test_users_without_an_embedded_song_get_no_vector(rng):
    vectors = rng.standard_normal((4, 3)).astype(np.float32)
    # user 1's only song has no vector (row -1); user 2 has no pair at all
    users = np.array([0, 1, 3])
    rows = np.array([2, -1, 1])
    profiles, has = mean_profiles(users, rows, 4, vectors)
    assert has.tolist() == [True, False, False, True]
    assert np.isnan(profiles[[1, 2]]).all()
    assert np.isfinite(profiles[[0, 3]]).all()


def test_min_songs_withholds_thin_profiles(rng):
    vectors = rng.standard_normal((5, 3)).astype(np.float32)
    users = np.array([0, 0, 1])
    rows = np.array([0, 1, 2])
    _, has = mean_profiles(users, rows, 2, vectors, min_songs=2)
    assert has.tolist() == [True, False]


def test_cosine_matches_numpy_and_is_missing_where_a_side_lacks_a_vector(rng):
    vectors = rng.standard_normal((5, 8)).astype(np.float32)
    profiles, has = mean_profiles(np.array([0, 0, 2]), np.array([0, 1, 4]), 3, vectors)

    # rows: a scored pair, a user without profile, a song without vector, another scored pair
    user_idx = np.array([0, 1, 2, 2])
    song_rows = np.array([3, 3, -1, 2])
    got = cosine(profiles, has, user_idx, vectors, song_rows, chunk_rows=2)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert got[0] == pytest.approx(cos(profiles[0], vectors[3]), abs=1e-6)
    assert np.isnan(got[1]) and np.isnan(got[2])
    assert got[3] == pytest.approx(cos(vectors[4], vectors[2]), abs=1e-6)


def test_cosine_of_all_zero_vector_is_missing():
    vectors = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    profiles, has = mean_profiles(np.array([0]), np.array([0]), 1, vectors)
    got = cosine(profiles, has, np.array([0, 0]), vectors, np.array([0, 1]))
    assert got[0] == pytest.approx(1.0)
    assert np.isnan(got[1])


def test_profile_dot_is_the_cosine_scaled_by_the_profile_norm(rng):
    vectors = rng.standard_normal((6, 8)).astype(np.float32)
    profiles, has = mean_profiles(np.array([0, 0, 0, 2]), np.array([0, 1, 2, 5]), 3, vectors)
    user_idx = np.array([0, 1, 2, 0])
    song_rows = np.array([3, 3, 4, -1])
    dot = profile_dot(profiles, has, user_idx, vectors, song_rows, chunk_rows=1)
    cos = cosine(profiles, has, user_idx, vectors, song_rows)

    # a varied taste has a short profile, so its dot is smaller than its cosine in magnitude
    norm = float(np.linalg.norm(profiles[0]))
    assert norm < 0.9
    assert dot[0] == pytest.approx(cos[0] * norm, abs=1e-6)
    assert dot[2] == pytest.approx(cos[2], abs=1e-6)  # one song: a unit profile
    assert np.isnan(dot[1]) and np.isnan(dot[3])


def test_profile_dot_scores_a_difference_of_profiles():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, -3.0]], dtype=np.float32)
    liked, _ = mean_profiles(np.array([0]), np.array([0]), 1, vectors)
    other, _ = mean_profiles(np.array([0]), np.array([1]), 1, vectors)
    got = profile_dot(liked - other, np.array([True]), np.array([0]), vectors, np.array([2]))
    assert got[0] == pytest.approx(np.sqrt(2.0), abs=1e-6)

    # without unit songs it is the plain dot product with the song's vector as it is
    plain = profile_dot(
        liked - other, np.array([True]), np.array([0]), vectors, np.array([2]), unit_songs=False
    )
    assert plain[0] == pytest.approx(6.0, abs=1e-6)


def test_bad_inputs_are_refused_with_the_value_named(rng):
    vectors = rng.standard_normal((3, 2)).astype(np.float32)
    with pytest.raises(
        InputError, match=r"user_idx must lie in \[0, n_users=2\); got range \[0, 5\]"
    ):
        mean_profiles(np.array([0, 5]), np.array([0, 1]), 2, vectors)
    with pytest.raises(InputError, match=r"song_rows must be < n_songs=3 .* got max=7"):
        mean_profiles(np.array([0]), np.array([7]), 1, vectors)
    with pytest.raises(InputError, match="equal length"):
        mean_profiles(np.array([0, 1]), np.array([0]), 2, vectors)
    with pytest.raises(InputError, match="song_rows must hold integers; got dtype=float64"):
        mean_profiles(np.array([0]), np.array([0.5]), 1, vectors)
    profiles, has = mean_profiles(np.array([0]), np.array([0]), 1, vectors)
    with pytest.raises(InputError, match="equal dim"):
        cosine(profiles, has, np.array([0]), np.zeros((3, 5), np.float32), np.array([0]))
