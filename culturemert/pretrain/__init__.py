"""Continual pre-training: masking, noise mixing, objective, recipes, data and the training loop."""
