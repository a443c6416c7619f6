"""The audio side of the ranker: an index folder, its embedding store, vectors by song code.

``train-ranker --index DIR`` and the recommender read a folder written by ``build-index STORE
--out DIR``. Its ``meta.json`` names the embedding store (``store_path``) and that store's
fingerprint; :meth:`AudioIndex.load` opens both and refuses a store that changed since the index
was built. :meth:`AudioIndex.song_vectors` then aligns the store's rows with the song codes of a
KKBox data set: songs without audio get row -1, so every audio feature of theirs is missing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding import EmbeddingStore
from embedding.errors import EncoreWarning, InputError, MismatchError
from retrieval.index import SongIndex

from ._log import logger
from .data import KKBoxData
from .features import SongVectors, listener_plays

# below this share of played songs with a vector the audio features say little
MIN_COVERAGE = 0.5


@dataclass
class AudioIndex:
    """A song index folder with the embedding store it was built from.

    Attributes
    ----------
    folder : Path
        The index folder (absolute).
    index : SongIndex
        The FAISS index; row ``r`` is row ``r`` of the store.
    store : EmbeddingStore
        The store: ids, vectors (memory-mapped) and, for encoders with tags, tag scores.
    """

    folder: Path
    index: SongIndex
    store: EmbeddingStore

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the store."""
        return self.store.fingerprint

    @classmethod
    def load(cls, folder: str | Path, *, expect_fingerprint: str | None = None) -> AudioIndex:
        """Open an index folder and its embedding store.

        Parameters
        ----------
        folder : str or Path
            A folder written by ``build-index``.
        expect_fingerprint : str or None, optional (default=None)
            Store fingerprint a model was trained with; checked when given.

        Returns
        -------
        AudioIndex

        Raises
        ------
        InputError
            If the folder, its files or its store are missing.
        MismatchError
            If the store changed since the index was built, or differs from
            ``expect_fingerprint``.

        Examples
        --------
        >>> audio = AudioIndex.load("demo/index")  # doctest: +SKIP
        >>> vectors = audio.song_vectors(load_kkbox("demo/data"))  # doctest: +SKIP
        """
        # the index, then the store it names, checked against each other
        folder = Path(folder).expanduser().resolve()
        index = SongIndex.load(folder, expect_fingerprint=expect_fingerprint)
        store = index.open_store()
        if expect_fingerprint is not None and store.fingerprint != expect_fingerprint:
            raise MismatchError(
                f"index={str(folder)!r} reads store fingerprint={store.fingerprint!r} but the "
                f"model was trained with fingerprint={expect_fingerprint!r}; retrain with "
                "train-ranker --index on this index"
            )
        logger.info(
            "audio: index %s (%s, %d songs) over store %s (dim %d, fingerprint %s)",
            folder,
            index.kind,
            index.n,
            store.path,
            store.dim,
            store.fingerprint,
        )
        return cls(folder=folder, index=index, store=store)

    def song_vectors(self, data: KKBoxData) -> SongVectors:
        """The store's vectors addressed by the song codes of ``data``.

        Parameters
        ----------
        data : KKBoxData
            The data set whose song codes the vectors should follow.

        Returns
        -------
        SongVectors
            Row -1 for songs without a vector; with every user's plays, for the ``listener``
            space of the audio group.

        Raises
        ------
        MismatchError
            If no song of ``data`` has a vector (the store was made for other songs).

        Warns
        -----
        EncoreWarning
            If fewer than half of the played songs have a vector.
        """
        # align by id
        vectors = SongVectors.from_ids(
            data.song_ids, self.store.ids, self.store.vectors, listeners=listener_plays(data)
        )
        if vectors.n_with_vector == 0:
            raise MismatchError(
                f"store={str(self.store.path)!r} holds none of the n_songs={len(data.song_ids)} "
                f"songs of data={str(data.folder)!r}; embed that data's audio (embed-audio "
                "--manifest ...) and build the index from that store"
            )

        # how many plays the audio covers
        played = data.train["song_id"].cat.codes.to_numpy()
        coverage = float((vectors.rows[played[played >= 0]] >= 0).mean()) if played.size else 0.0
        logger.info(
            "audio: %d of %d songs have a vector, covering %.1f %% of train rows",
            vectors.n_with_vector,
            len(data.song_ids),
            100 * coverage,
        )
        if coverage < MIN_COVERAGE:
            message = (
                f"only {100 * coverage:.1f} % of train rows have a song with a vector in "
                f"store={str(self.store.path)!r}; the audio features will be mostly missing. "
                "Embed the audio of the remaining songs to use them fully"
            )
            logger.warning("%s", message)
            warnings.warn(message, EncoreWarning, stacklevel=2)
        return vectors

    def top_tags(self, store_rows: np.ndarray, n: int = 3) -> list[list[tuple[str, float]]]:
        """The ``n`` strongest tags of each store row; empty lists without tags or a row.

        Parameters
        ----------
        store_rows : ndarray [shape=(n_songs,), dtype=int]
            Rows of the store, -1 for a song without a vector.
        n : int, optional (default=3)
            Tags per song.

        Returns
        -------
        list of list of (str, float)
            Tag name and score, strongest first.
        """
        names = self.store.tag_names
        tags = self.store.tags
        if tags is None or names is None:
            return [[] for _ in store_rows]
        if n < 1:
            raise InputError(f"n={n}: expected at least one tag per song")
        out: list[list[tuple[str, float]]] = []
        for row in np.asarray(store_rows):
            if row < 0:
                out.append([])
                continue
            scores = np.asarray(tags[row], dtype=np.float64)
            best = np.argsort(-scores, kind="stable")[:n]
            out.append([(names[i], float(scores[i])) for i in best])
        return out
