"""A linear map of song vectors onto the directions in which songs of one group sound alike.

An audio embedding describes much more than what listeners choose by: the melody, the key, the
mix and the recording differ from song to song and fill most of the vector's variance. Songs of
one group share a style but not those details: the songs of one artist, or the songs one
listener plays. So the directions in which the members of a group agree, relative to how much
they vary inside their group, are the directions of style. :func:`fit_group_projection` finds
them as a linear discriminant analysis over the groups (between-group against within-group
scatter, the within-group scatter shrunk towards a multiple of the identity) and keeps the
strongest few, scaled so that the within-group spread is one in each. Dot products and cosines
in that space follow style more closely than in the raw space. A song belongs to one group (an
artist) or, through a weighted membership matrix, to many (every listener who played it). The
fit reads only the vectors and the memberships, never a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from embedding.errors import InputError

from ._log import logger

# rows read per step when projecting, so a memory-mapped matrix is streamed
CHUNK_ROWS = 16_384


@dataclass(frozen=True)
class GroupProjection:
    """A fitted map ``(x - mean) @ components`` from song vectors to the group space.

    Attributes
    ----------
    mean : ndarray [shape=(dim,), dtype=float64]
        Mean of the vectors the map was fitted on.
    components : ndarray [shape=(dim, n_components), dtype=float64]
        Discriminant directions, strongest first, scaled to unit within-group variance.
    ratios : ndarray [shape=(n_components,), dtype=float64]
        Between-group to within-group variance of each direction.
    n_groups : int
        Groups the map was fitted on.
    """

    mean: np.ndarray
    components: np.ndarray
    ratios: np.ndarray
    n_groups: int

    @property
    def n_components(self) -> int:
        """Dimension of the group space."""
        return int(self.components.shape[1])

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Project vectors into the group space.

        Parameters
        ----------
        vectors : ndarray [shape=(n, dim)]
            Song vectors; a memory map is read a chunk at a time.

        Returns
        -------
        ndarray [shape=(n, n_components), dtype=float32]
        """
        if vectors.ndim != 2 or vectors.shape[1] != self.mean.shape[0]:
            raise InputError(
                f"vectors.shape={vectors.shape}: expected (n, {self.mean.shape[0]}), the "
                "dimension the projection was fitted on"
            )
        out = np.empty((vectors.shape[0], self.n_components), dtype=np.float32)
        for start in range(0, vectors.shape[0], CHUNK_ROWS):
            chunk = np.asarray(vectors[start : start + CHUNK_ROWS], dtype=np.float64)
            out[start : start + CHUNK_ROWS] = (chunk - self.mean) @ self.components
        return out


def fit_group_projection(
    vectors: np.ndarray,
    groups: np.ndarray | sp.spmatrix | sp.sparray,
    *,
    n_components: int = 6,
    shrinkage: float = 0.1,
    min_group_size: int = 2,
) -> GroupProjection:
    """Fit the directions in which songs of one group agree (a shrunk linear discriminant).

    Parameters
    ----------
    vectors : ndarray [shape=(n_songs, dim)]
        Song vectors.
    groups : ndarray [shape=(n_songs,), dtype=int] or sparse matrix [shape=(n_groups, n_songs)]
        Either the one group of each song (e.g. its artist), negative for a song in no group, or
        a membership matrix in which a song may belong to many groups with weights (e.g. how
        often each listener played it). Songs in no group take no part in the fit, and neither
        do groups smaller than ``min_group_size``: they say little about the spread inside a
        group.
    n_components : int, optional (default=6)
        Directions to keep; at most the number of groups minus one and ``dim``.
    shrinkage : float, optional (default=0.1)
        Weight in [0, 1) of the identity (times the mean within-group variance) mixed into the
        within-group scatter, which keeps directions where the groups hardly vary from
        dominating.
    min_group_size : int, optional (default=2)
        Fewest songs (or, for a membership matrix, the least total weight) a group needs to
        take part.

    Returns
    -------
    GroupProjection

    Raises
    ------
    InputError
        If the shapes disagree, an option is out of range, a weight is negative, or fewer than
        two groups have ``min_group_size`` songs.

    Notes
    -----
    Every (group, song) membership counts with its weight: a group's centroid is the weighted
    mean of its songs, the between-group scatter weighs each centroid by the group's total
    weight, and the within-group scatter is the weighted scatter of all memberships around
    their group's centroid. With one group per song this is the textbook discriminant.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> groups = np.repeat(np.arange(50), 4)
    >>> style = rng.normal(size=(50, 2))[groups]  # shared by a group's songs
    >>> detail = 3.0 * rng.normal(size=(200, 8))  # each song's own, and louder
    >>> proj = fit_group_projection(np.c_[style, detail], groups, n_components=2)
    >>> share = (proj.components[:2] ** 2).sum() / (proj.components**2).sum()
    >>> bool(share > 0.95)  # the map reads the shared style, not the louder details
    True
    """
    # check the options and turn the groups into a membership matrix
    vectors = np.asarray(vectors)
    if n_components < 1 or not 0.0 <= shrinkage < 1.0 or min_group_size < 2:
        raise InputError(
            f"n_components={n_components}, shrinkage={shrinkage}, "
            f"min_group_size={min_group_size}: expected n_components >= 1, 0 <= shrinkage < 1 "
            "and min_group_size >= 2"
        )
    membership = _membership(groups, vectors.shape)

    # the groups that take part, and the songs in any of them
    size = np.asarray(membership.sum(axis=1)).ravel()
    membership = membership[size >= min_group_size]
    size = size[size >= min_group_size]
    n_groups = len(size)
    if n_groups < 2:
        raise InputError(
            f"n_groups={n_groups} with at least min_group_size={min_group_size} songs: the "
            "projection needs two or more; give groups (artists) for more songs"
        )
    weight = np.asarray(membership.sum(axis=0)).ravel()
    songs = np.flatnonzero(weight > 0)
    membership, weight = membership[:, songs], weight[songs]
    x = np.asarray(vectors[songs], dtype=np.float64)

    # total, between-group and within-group scatter, per unit of weight
    total = float(weight.sum())
    mean = weight @ x / total
    x -= mean
    s_total = (x * weight[:, None]).T @ x / total
    centroids = np.asarray(membership @ x) / size[:, None]
    s_between = (centroids * size[:, None]).T @ centroids / total
    s_within = s_total - s_between

    # shrink the within scatter towards its mean variance, then solve S_b v = ratio S_w v
    dim = x.shape[1]
    scale = float(np.trace(s_within)) / dim
    s_within = (1.0 - shrinkage) * s_within + shrinkage * max(scale, 1e-12) * np.eye(dim)
    ratios, vecs = scipy.linalg.eigh(s_between, s_within)
    keep = min(n_components, n_groups - 1, dim)
    order = np.argsort(ratios)[::-1][:keep]
    logger.info(
        "group projection: %d of dim %d kept from %d songs in %d groups, ratios %s",
        keep,
        dim,
        len(x),
        n_groups,
        np.array2string(ratios[order], precision=2),
    )
    # eigh normalises vecs so that v' S_w v = 1: unit within-group variance per direction
    return GroupProjection(
        mean=mean, components=vecs[:, order], ratios=ratios[order], n_groups=n_groups
    )


def _membership(
    groups: np.ndarray | sp.spmatrix | sp.sparray, shape: tuple[int, ...]
) -> sp.csr_matrix:
    """Groups as a float64 (n_groups, n_songs) membership matrix, checked against the vectors."""
    # a membership matrix as given
    if sp.issparse(groups):
        if len(shape) != 2 or groups.shape[1] != shape[0]:
            raise InputError(
                f"vectors.shape={shape} and groups.shape={groups.shape}: expected (n_songs, dim) "
                "and a membership matrix (n_groups, n_songs)"
            )
        matrix = sp.csr_matrix(groups, dtype=np.float64)
        if matrix.nnz and matrix.data.min() < 0:
            raise InputError(
                f"groups holds a negative weight={matrix.data.min()}; membership weights must "
                "be counts or other non-negative weights"
            )
        return matrix

    # one group per song: a one-hot matrix over the songs in a group
    groups = np.asarray(groups)
    if len(shape) != 2 or groups.shape != (shape[0],):
        raise InputError(
            f"vectors.shape={shape} and groups.shape={groups.shape}: expected "
            "(n_songs, dim) and (n_songs,)"
        )
    member = np.flatnonzero(groups >= 0)
    code = np.unique(groups[member], return_inverse=True)[1].ravel()
    n_groups = int(code.max()) + 1 if code.size else 0
    return sp.csr_matrix(
        (np.ones(len(member)), (code, member)), shape=(n_groups, shape[0]), dtype=np.float64
    )
