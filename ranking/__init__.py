"""KKBox side of Encore: the data layer, leak-free features and the LightGBM ranker."""
