"""Audio side of Encore: pretrained encoders that turn audio files into song vectors.

- :mod:`embedding.encoders` — the encoder interface, the windowing rule and the registry by name
  (:func:`get_encoder`, :func:`available_encoders`)
- :mod:`embedding.musicnn`, :mod:`embedding.musicfm` — the two encoders
- :mod:`embedding.audio` — decoding any audio file to mono float32 at an encoder's sample rate
- :mod:`embedding.store` — the embedding store folder (:func:`load_store`, :func:`write_store`,
  :class:`EmbeddingStore`), written crash-safely and resumable
- :mod:`embedding.cli` — the ``embed-audio`` batch command
- :mod:`embedding.errors` — the exception tree shared by every Encore package
"""

from __future__ import annotations

from .encoders import available_encoders, get_encoder
from .store import EmbeddingStore, load_store, write_store

__all__ = ["EmbeddingStore", "available_encoders", "get_encoder", "load_store", "write_store"]
