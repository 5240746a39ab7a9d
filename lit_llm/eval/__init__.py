"""Evaluation: scoring checkpoints on the built-in verifiable tasks."""
