"""Keras pooling models trained on frame-level features."""
