"""Evaluation: datasets, scorers, the runner, statistics and the quality gate."""
