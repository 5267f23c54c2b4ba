"""Keras pooling models trained on frame-level features.

Importing the package registers every serializable framevlad class (pooling layers, heads),
so `keras.saving.load_model` can read saved models after `import pooling_models`.
"""

from pooling_models import builder, heads, layers

__all__ = ["builder", "heads", "layers"]
