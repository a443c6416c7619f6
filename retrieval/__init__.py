"""Vector side of Encore: user profiles from song vectors and FAISS cosine indexes."""
