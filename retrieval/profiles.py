"""User taste profiles built from song vectors, and row-wise scoring of songs against them.

A user's profile is the mean of the L2-normalised vectors of the songs given for that user (for
instance the songs they replayed). Users with no usable song get no profile: their row holds NaN
and ``has_profile`` is False, so any score computed from it is missing rather than a misleading
zero. Songs are addressed by their row in the song-vector matrix; a negative row means "this song
has no vector" and the pair is ignored.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from embedding.errors import InputError

from ._log import logger

# rows gathered per step in cosine(); 16 k rows of 1024 float32 is 64 MiB per side
DEFAULT_CHUNK_ROWS = 16_384


def l2_normalize(x: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Scale each row to unit L2 norm.

    Parameters
    ----------
    x : np.ndarray [shape=(n, dim)] or [shape=(dim,)]
        Vectors; any float dtype.
    eps : float, optional (default=1e-12)
        Rows whose norm is at most ``eps`` are left as they are (all zero stays all zero).

    Returns
    -------
    np.ndarray [shape=x.shape], float32
        A new array; ``x`` is not modified.
    """
    # work on a float32 copy so memmaps and caller arrays stay untouched
    out = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(out, axis=-1, keepdims=True)

    # divide only where the norm is usable
    np.divide(out, norms, out=out, where=norms > eps)
    return out


def _check_pairs(user_idx: np.ndarray, song_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two equal-length integer arrays and return them as int64."""
    user_idx = np.asarray(user_idx)
    song_rows = np.asarray(song_rows)
    if user_idx.ndim != 1 or song_rows.ndim != 1 or len(user_idx) != len(song_rows):
        raise InputError(
            f"user_idx and song_rows must be 1-d and of equal length; got "
            f"user_idx.shape={user_idx.shape}, song_rows.shape={song_rows.shape}"
        )
    for name, arr in (("user_idx", user_idx), ("song_rows", song_rows)):
        if len(arr) and not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"{name} must hold integers; got dtype={arr.dtype}")
    return user_idx.astype(np.int64, copy=False), song_rows.astype(np.int64, copy=False)


def mean_profiles(
    user_idx: np.ndarray,
    song_rows: np.ndarray,
    n_users: int,
    song_vectors: np.ndarray,
    *,
    min_songs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the L2-normalised vectors of each user's songs.

    Each distinct (user, song) pair counts once, however often it is given. The mean is not
    re-normalised: its norm (1 for a single song, less for varied tastes) carries information
    and :func:`cosine` ignores it anyway. The work is one sparse matrix product over the songs
    that occur, so millions of pairs take seconds.

    Parameters
    ----------
    user_idx : np.ndarray [shape=(n_pairs,)], int
        User of each pair, in ``[0, n_users)``.
    song_rows : np.ndarray [shape=(n_pairs,)], int
        Row of the song in ``song_vectors``; negative rows (song without a vector) are ignored.
    n_users : int
        Number of profile rows to return.
    song_vectors : np.ndarray [shape=(n_songs, dim)]
        Song vectors, e.g. ``EmbeddingStore.vectors`` (a memmap is fine: only used rows are read).
    min_songs : int, optional (default=1)
        Users with fewer distinct usable songs get no profile.

    Returns
    -------
    profiles : np.ndarray [shape=(n_users, dim)], float32
        Profile rows; NaN for users without a profile.
    has_profile : np.ndarray [shape=(n_users,)], bool
        True where the user has a profile.

    Raises
    ------
    InputError
        If the arrays disagree in length, a user index is out of range, a song row is past the
        end of ``song_vectors``, or ``min_songs`` < 1.

    Examples
    --------
    >>> vecs = np.eye(3, dtype=np.float32)
    >>> prof, has = mean_profiles(np.array([0, 0]), np.array([0, 1]), 2, vecs)
    >>> prof[0].tolist(), bool(has[1])
    ([0.5, 0.5, 0.0], False)
    """
    # validate the inputs
    user_idx, song_rows = _check_pairs(user_idx, song_rows)
    if song_vectors.ndim != 2:
        raise InputError(f"song_vectors must be 2-d (n_songs, dim); got shape={song_vectors.shape}")
    if min_songs < 1:
        raise InputError(f"min_songs must be >= 1; got min_songs={min_songs}")
    n_songs, dim = song_vectors.shape
    if len(user_idx) and (user_idx.min() < 0 or user_idx.max() >= n_users):
        raise InputError(
            f"user_idx must lie in [0, n_users={n_users}); got range "
            f"[{user_idx.min()}, {user_idx.max()}]"
        )
    if len(song_rows) and song_rows.max() >= n_songs:
        raise InputError(
            f"song_rows must be < n_songs={n_songs} (the rows of song_vectors); got "
            f"max={song_rows.max()}. Map song ids with the same store the vectors came from."
        )

    # keep pairs whose song has a vector and renumber the songs that occur
    keep = song_rows >= 0
    users, rows = user_idx[keep], song_rows[keep]
    used, local = np.unique(rows, return_inverse=True)

    # binary user x used-song matrix: duplicates collapse to one
    mat = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, local)),
        shape=(n_users, len(used)),
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    counts = np.diff(mat.indptr)

    # one sparse product over the normalised vectors of the used songs
    unit = l2_normalize(np.asarray(song_vectors[used]))
    profiles = np.asarray(mat @ unit, dtype=np.float32)
    has_profile = counts >= min_songs
    profiles[has_profile] /= counts[has_profile, None].astype(np.float32)
    profiles[~has_profile] = np.nan

    logger.debug(
        "profiles: %d of %d users from %d pairs over %d songs (dim=%d)",
        int(has_profile.sum()),
        n_users,
        int(keep.sum()),
        len(used),
        dim,
    )
    return profiles, has_profile


def cosine(
    profiles: np.ndarray,
    has_profile: np.ndarray,
    user_idx: np.ndarray,
    song_vectors: np.ndarray,
    song_rows: np.ndarray,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Cosine similarity between each row's user profile and song vector.

    Parameters
    ----------
    profiles : np.ndarray [shape=(n_users, dim)]
        From :func:`mean_profiles`.
    has_profile : np.ndarray [shape=(n_users,)], bool
        From :func:`mean_profiles`.
    user_idx : np.ndarray [shape=(n_rows,)], int
        User of each row.
    song_vectors : np.ndarray [shape=(n_songs, dim)]
        Song vectors (a memmap is fine).
    song_rows : np.ndarray [shape=(n_rows,)], int
        Row of each row's song in ``song_vectors``; negative where the song has no vector.
    chunk_rows : int, optional (default=16384)
        Rows scored per step; bounds memory to about ``2 * chunk_rows * dim * 4`` bytes.

    Returns
    -------
    np.ndarray [shape=(n_rows,)], float32
        Cosine in [-1, 1]; NaN where the user has no profile, the song has no vector, or
        either vector is all zero.

    Raises
    ------
    InputError
        If shapes disagree or ``chunk_rows`` < 1.
    """
    scores = _score_rows(
        profiles,
        has_profile,
        user_idx,
        song_vectors,
        song_rows,
        unit_profiles=True,
        unit_songs=True,
        chunk=chunk_rows,
    )
    return np.clip(scores, -1.0, 1.0)


def profile_dot(
    profiles: np.ndarray,
    has_profile: np.ndarray,
    user_idx: np.ndarray,
    song_vectors: np.ndarray,
    song_rows: np.ndarray,
    *,
    unit_songs: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Dot product of each row's user profile, as it is, with the song's (unit) vector.

    For a profile from :func:`mean_profiles` this is the cosine scaled by the profile's norm:
    close to the cosine for a user whose songs all sound alike, shrunk towards zero for a user
    whose songs point every way. Unlike :func:`cosine` it also accepts profiles that are not
    means, such as the difference of two profiles.

    Parameters
    ----------
    profiles, has_profile, user_idx, song_vectors, song_rows, chunk_rows
        As for :func:`cosine`, except that ``profiles`` may hold any vectors (rows of users
        without a profile are ignored); only the song vectors are normalised, and only with
        ``unit_songs``.
    unit_songs : bool, optional (default=True)
        Normalise the song vectors; False gives the plain dot product with the song's vector.

    Returns
    -------
    np.ndarray [shape=(n_rows,)], float32
        NaN where the user has no profile, the song has no vector, or either is all zero.

    Raises
    ------
    InputError
        If shapes disagree or ``chunk_rows`` < 1.

    Examples
    --------
    >>> prof, has = mean_profiles(np.array([0, 0]), np.array([0, 1]), 1, np.eye(2))
    >>> float(profile_dot(prof, has, np.array([0]), np.eye(2), np.array([0]))[0])
    0.5
    """
    return _score_rows(
        profiles,
        has_profile,
        user_idx,
        song_vectors,
        song_rows,
        unit_profiles=False,
        unit_songs=unit_songs,
        chunk=chunk_rows,
    )


def _score_rows(
    profiles: np.ndarray,
    has_profile: np.ndarray,
    user_idx: np.ndarray,
    song_vectors: np.ndarray,
    song_rows: np.ndarray,
    *,
    unit_profiles: bool,
    unit_songs: bool,
    chunk: int,
) -> np.ndarray:
    """Row-wise product of profile and song vector, each normalised or not."""
    # validate the inputs
    user_idx, song_rows = _check_pairs(user_idx, song_rows)
    if profiles.ndim != 2 or song_vectors.ndim != 2 or profiles.shape[1] != song_vectors.shape[1]:
        raise InputError(
            f"profiles and song_vectors must be 2-d with equal dim; got "
            f"profiles.shape={profiles.shape}, song_vectors.shape={song_vectors.shape}"
        )
    if has_profile.shape != (profiles.shape[0],):
        raise InputError(
            f"has_profile must have shape ({profiles.shape[0]},); got {has_profile.shape}"
        )
    if chunk < 1:
        raise InputError(f"chunk_rows must be >= 1; got chunk_rows={chunk}")

    # rows with both sides present
    out = np.full(len(user_idx), np.nan, dtype=np.float32)
    valid = (song_rows >= 0) & has_profile[user_idx]
    where = np.flatnonzero(valid)

    # score the valid rows chunk by chunk
    for start in range(0, len(where), chunk):
        sel = where[start : start + chunk]
        p = np.asarray(profiles[user_idx[sel]], dtype=np.float32)
        if unit_profiles:
            p = l2_normalize(p)
        v = np.asarray(song_vectors[song_rows[sel]], dtype=np.float32)
        if unit_songs:
            v = l2_normalize(v)
        dots = np.einsum("ij,ij->i", p, v)
        dots[~(p.any(axis=1) & v.any(axis=1))] = np.nan
        out[sel] = dots
    return out
