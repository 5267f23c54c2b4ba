"""Masks for padded frame sequences, and the masked statistics every pooling layer needs.

Videos in a batch have different lengths, so frames arrive right-padded to the longest one.
A padded frame must never change a pooled vector; these helpers are the single place where
"exclude the padding" is spelled out, so each pooling layer only has to call them.

Shapes: frames [B, T, D] float, mask [B, T] bool (True = real frame). Every video is
assumed to have at least one real frame.
"""

import keras
from keras import ops


def zero_padding(values: keras.KerasTensor, mask: keras.KerasTensor | None) -> keras.KerasTensor:
    """Sets padded positions of `values` [B, T, ...] to zero.

    `where` rather than a multiply, so garbage in the padding (even inf or NaN) cannot leak
    through as `0 * inf`.
    """
    if mask is None:
        return values
    mask = _broadcastable(mask, values)
    return ops.where(mask, values, ops.zeros_like(values))


def masked_mean(values: keras.KerasTensor, mask: keras.KerasTensor | None) -> keras.KerasTensor:
    """Mean over the real time steps of `values` [B, T, C] -> [B, C].

    Used for mean pooling and for `single_frame` models, which classify every frame and
    average the per-frame probabilities over the real frames only.
    """
    if mask is None:
        return ops.mean(values, axis=1)
    total = ops.sum(zero_padding(values, mask), axis=1)  # [B, C]
    count = ops.sum(ops.cast(mask, values.dtype), axis=1, keepdims=True)  # [B, 1]
    return total / ops.maximum(count, 1.0)


def masked_max(values: keras.KerasTensor, mask: keras.KerasTensor | None) -> keras.KerasTensor:
    """Max over the real time steps of `values` [B, T, C] -> [B, C].

    Padding becomes -inf, so it can never win; every video has at least one real frame.
    """
    if mask is None:
        return ops.max(values, axis=1)
    lowest = ops.full_like(values, float("-inf"))
    return ops.max(ops.where(_broadcastable(mask, values), values, lowest), axis=1)


def _broadcastable(mask: keras.KerasTensor, values: keras.KerasTensor) -> keras.KerasTensor:
    """Appends unit axes to `mask` [B, T] until it has the rank of `values`."""
    mask = ops.cast(mask, "bool")
    for _ in range(len(values.shape) - len(mask.shape)):
        mask = ops.expand_dims(mask, -1)
    return mask


class MaskedPooling(keras.layers.Layer):
    """Base of the pooling layers: takes frames [B, T, D] with a mask, returns [B, P].

    Declaring mask support keeps Keras from warning that the mask is dropped; the output
    has no time axis, so no mask travels past the pooling.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, frames, previous_mask=None) -> None:
        return None


@keras.saving.register_keras_serializable(package="framevlad")
class FrameMask(keras.layers.Layer):
    """Turns per-video frame counts into the bool mask the pooling layers take.

    Records store a variable number of frames per video; batching pads them to the longest
    one. Building the mask inside the model (rather than in the input pipeline) keeps a
    saved model self-contained: it takes frames [B, T, D] and num_frames [B] int.
    The mask is right-padded by construction, which cuDNN recurrent kernels require.

    Call args:
      frames: [B, T, D] float; only its time length is read.
      num_frames: [B] int, real frames per video (1 <= num_frames <= T).

    Returns:
      [B, T] bool, True where t < num_frames.
    """

    def call(self, frames: keras.KerasTensor, num_frames: keras.KerasTensor) -> keras.KerasTensor:
        steps = ops.arange(ops.shape(frames)[1], dtype="int32")  # [T]
        lengths = ops.cast(ops.reshape(num_frames, (-1, 1)), "int32")  # [B, 1]
        return ops.expand_dims(steps, 0) < lengths


@keras.saving.register_keras_serializable(package="framevlad")
class MaskedBatchNormalization(keras.layers.Layer):
    """Batch normalization whose statistics come from real frames only.

    A per-frame batch norm over a padded batch would average padded zeros (or garbage) into
    its moments, so a video's output would depend on how much padding its batch-mates
    forced on it. Here, in training, mean and variance are taken over the real positions
    only, and the moving averages follow those; in inference the moving averages are used,
    as in `keras.layers.BatchNormalization`. Padded positions come out as zero.

    Normalizes the last axis of inputs [B, T, C] (or [B, C], where a mask is meaningless).

    Args:
      momentum: moving-average momentum for the inference statistics.
      epsilon: added to the variance before the square root.
      center: learn an offset (beta).
      scale: learn a gain (gamma).
    """

    def __init__(
        self,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.momentum = momentum
        self.epsilon = epsilon
        self.center = center
        self.scale = scale

    def build(self, input_shape: tuple) -> None:
        channels = (input_shape[-1],)
        self.gamma = (
            self.add_weight(shape=channels, initializer="ones", name="gamma")
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(shape=channels, initializer="zeros", name="beta")
            if self.center
            else None
        )
        self.moving_mean = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=channels, initializer="ones", trainable=False, name="moving_variance"
        )

    def call(
        self,
        inputs: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        if training and self.trainable:
            mean, variance = self._masked_moments(inputs, mask)
            self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
            self.moving_variance.assign(
                self.momentum * self.moving_variance + (1.0 - self.momentum) * variance
            )
        else:
            mean, variance = self.moving_mean, self.moving_variance
        outputs = (inputs - mean) * ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            outputs = outputs * self.gamma
        if self.beta is not None:
            outputs = outputs + self.beta
        return zero_padding(outputs, mask)

    def _masked_moments(
        self, inputs: keras.KerasTensor, mask: keras.KerasTensor | None
    ) -> tuple[keras.KerasTensor, keras.KerasTensor]:
        """Mean and (biased) variance per channel over the real positions -> ([C], [C])."""
        axes = tuple(range(len(inputs.shape) - 1))
        if mask is None:
            return ops.mean(inputs, axis=axes), ops.var(inputs, axis=axes)
        weights = ops.cast(_broadcastable(mask, inputs), inputs.dtype)  # [B, T, 1]
        count = ops.maximum(ops.sum(weights), 1.0)
        mean = ops.sum(zero_padding(inputs, mask), axis=axes) / count
        centered = zero_padding(inputs - mean, mask)
        return mean, ops.sum(ops.square(centered), axis=axes) / count

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            momentum=self.momentum, epsilon=self.epsilon, center=self.center, scale=self.scale
        )
        return config
