"""Checkpoint conversion to and from other ecosystems (Hugging Face `transformers` folders)."""
