"""Datasets, the prepared image store, the identity sampler and the training transforms."""
