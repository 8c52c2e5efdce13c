"""Evaluation by probing: datasets, cached features, probes, metrics and reports."""
