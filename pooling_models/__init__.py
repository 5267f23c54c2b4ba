"""Keras pooling models trained on frame-level features.

Importing the package is light (no TensorFlow), so that `train_pool --help` answers at once.
`pooling_models.builder` (imported by `model_dir.load_model`) registers every serializable
framevlad class (pooling layers, heads): `keras.saving.load_model` reads saved models after
`import pooling_models.builder`, or use `pooling_models.model_dir.load_model(directory)`.
"""
