"""audiotune: labelled audio to classifiers and embeddings."""

__version__ = "0.1.0"
