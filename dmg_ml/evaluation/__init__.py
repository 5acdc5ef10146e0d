"""Evaluation: folds and protocols, cross-validation, metrics."""
