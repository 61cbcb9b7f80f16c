"""Offline training: datasets, models, training loops, evaluation."""
