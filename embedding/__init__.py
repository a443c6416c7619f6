"""Audio side of Encore: pretrained encoders that turn audio files into song vectors.

- :mod:`embedding.encoders` — the encoder interface, the windowing rule and the registry by name
- :mod:`embedding.errors` — the exception tree shared by every Encore package
"""
