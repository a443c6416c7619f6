"""Vector side of Encore: user profiles from song vectors and FAISS cosine indexes.

- :mod:`retrieval.index` — :class:`SongIndex` (flat, HNSW or IVF cosine search with exclusion of
  played songs, save/load checked against the embedding store), :func:`build_index`,
  :func:`build_index_from_store`, :func:`read_meta`
- :mod:`retrieval.profiles` — :func:`l2_normalize`, :func:`mean_profiles` (a user's taste as the
  mean of their songs' unit vectors), row-wise :func:`cosine` and :func:`profile_dot` (the
  profile as it is against the song's unit vector), with missing values kept missing
- :mod:`retrieval.projection` — :func:`fit_group_projection`, a :class:`GroupProjection` onto
  the few directions in which songs of one group (artist) agree, where dot products follow style
- :mod:`retrieval.cli` — the ``build-index`` command
"""

from __future__ import annotations

from .index import SongIndex, build_index, build_index_from_store, read_meta
from .profiles import cosine, l2_normalize, mean_profiles, profile_dot
from .projection import GroupProjection, fit_group_projection

__all__ = [
    "GroupProjection",
    "SongIndex",
    "build_index",
    "build_index_from_store",
    "cosine",
    "fit_group_projection",
    "l2_normalize",
    "mean_profiles",
    "profile_dot",
    "read_meta",
]
