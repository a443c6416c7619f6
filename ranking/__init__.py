"""KKBox side of Encore: the data layer, leak-free features, the LightGBM ranker and serving.

- :mod:`ranking.data` — the five KKBox CSVs read into aligned, memory-frugal frames
- :mod:`ranking.oof` — the one leak-free (out-of-fold) scheme for label-derived features
- :mod:`ranking.features` — the feature-group registry, for observed rows and for query rows
- :mod:`ranking.audio` — an index folder and its embedding store, vectors by song code
- :mod:`ranking.train` — training, the audio ablation, the refit, test predictions
- :mod:`ranking.recommend` — :class:`~ranking.recommend.Recommender`: candidates, features, top k
- :mod:`ranking.evaluate` — leak-free offline evaluation of the recommendations, with plots
- :mod:`ranking.cli` — ``train-ranker`` and ``rank``
"""
