"""Weight-free poolings: masked mean and masked max over time.

The YouTube-8M baselines for frame features; everything learnable should beat them, so
they anchor every comparison.
"""

from collections.abc import Callable

import keras

from pooling_models.layers.masking import MaskedPooling, masked_max, masked_mean


class _FrameStatistic(MaskedPooling):
    """A fixed statistic over the real frames, per dimension: [B, T, D] -> [B, D]."""

    statistic: Callable[[keras.KerasTensor, keras.KerasTensor | None], keras.KerasTensor]

    def call(
        self, frames: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        return self.statistic(frames, mask)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], frames_shape[-1])


@keras.saving.register_keras_serializable(package="framevlad")
class MeanPooling(_FrameStatistic):
    """Average of the real frames. No args.

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, D].
    """

    statistic = staticmethod(masked_mean)


@keras.saving.register_keras_serializable(package="framevlad")
class MaxPooling(_FrameStatistic):
    """Per-dimension maximum over the real frames. No args.

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, D].
    """

    statistic = staticmethod(masked_max)
