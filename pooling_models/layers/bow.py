"""Bag-of-words poolings: soft-DBoW (Miech et al. 2017) and DBoF (YouTube-8M, 2016).

Both treat a video as an unordered bag of frames and describe it by which learned "visual
words" its frames activate, discarding the residual detail NetVLAD keeps. They are cheap
(output K rather than K * D) and were the strong YouTube-8M baselines.
"""

import keras
from keras import ops

from pooling_models.layers.assignment import ClusterPooling, l2_normalize
from pooling_models.layers.masking import (
    MaskedBatchNormalization,
    MaskedPooling,
    masked_max,
    masked_mean,
    zero_padding,
)

_POOLINGS = {"max": masked_max, "mean": masked_mean}
_ACTIVATIONS = ("relu", "relu6")


@keras.saving.register_keras_serializable(package="framevlad")
class SoftDBoW(ClusterPooling):
    """Soft bag of visual words: h_k = sum_t a_tk, L2-normalized.

    a_tk is `SoftAssignment`, so each frame spreads one unit of mass over the K words and
    padded frames none. L2 rather than dividing by the frame count, as in LOUPE; both make
    the histogram independent of video length.

    Args:
      cluster_size: K, the number of visual words.
      use_batch_norm: batch-normalize the assignment logits (over real frames only).

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, K], unit L2 norm.
    """

    def _aggregate(
        self, frames: keras.KerasTensor, assignment: keras.KerasTensor
    ) -> keras.KerasTensor:
        return l2_normalize(ops.sum(assignment, axis=1))

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], self.cluster_size)


@keras.saving.register_keras_serializable(package="framevlad")
class DBoF(MaskedPooling):
    """Deep bag of frames, as YouTube-8M's DbofModel: project, activate, pool over time.

    Each frame is projected to `cluster_size` units (batch-normed over real frames, then
    ReLU6 or ReLU), the activations are max- or mean-pooled over the real frames, and,
    when `hidden_size` is given, the pooled vector goes through one more projection
    (batch norm over videos + the same activation). The per-frame projection is sparse and
    wide, so max pooling acts as "did any frame fire this word".

    YouTube-8M also batch-normalizes the input frames; that belongs to the model builder
    (a `MaskedBatchNormalization` on frames), as it would for every pooling.

    Args:
      cluster_size: K, width of the per-frame projection.
      hidden_size: width of the optional video-level projection; None to skip it.
      pooling: "max" or "mean", over real frames.
      activation: "relu6" (YouTube-8M's choice) or "relu".
      use_batch_norm: batch-normalize the projections; when False they get biases.

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, hidden_size] if hidden_size else [B, cluster_size].
    """

    def __init__(
        self,
        cluster_size: int,
        hidden_size: int | None = None,
        pooling: str = "max",
        activation: str = "relu6",
        use_batch_norm: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in _POOLINGS:
            raise ValueError(f"DBoF pooling={pooling!r}: expected one of {sorted(_POOLINGS)}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"DBoF activation={activation!r}: expected one of {_ACTIVATIONS}")
        self.cluster_size = cluster_size
        self.hidden_size = hidden_size
        self.pooling = pooling
        self.activation = activation
        self.use_batch_norm = use_batch_norm

    def build(self, frames_shape: tuple) -> None:
        self.projection = keras.layers.Dense(
            self.cluster_size, use_bias=not self.use_batch_norm, name="projection"
        )
        self.projection.build(frames_shape)
        projected_shape = (*frames_shape[:-1], self.cluster_size)
        self.projection_norm = None
        if self.use_batch_norm:
            self.projection_norm = MaskedBatchNormalization(name="projection_norm")
            self.projection_norm.build(projected_shape)
        self.hidden = None
        self.hidden_norm = None
        if self.hidden_size:
            self.hidden = keras.layers.Dense(
                self.hidden_size, use_bias=not self.use_batch_norm, name="hidden"
            )
            self.hidden.build((frames_shape[0], self.cluster_size))
            if self.use_batch_norm:
                self.hidden_norm = keras.layers.BatchNormalization(name="hidden_norm")
                self.hidden_norm.build((frames_shape[0], self.hidden_size))

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        projected = self.projection(zero_padding(frames, mask))  # [B, T, K]
        if self.projection_norm is not None:
            projected = self.projection_norm(projected, mask=mask, training=training)
        pooled = _POOLINGS[self.pooling](self._activate(projected), mask)  # [B, K]
        if self.hidden is None:
            return pooled
        hidden = self.hidden(pooled)
        if self.hidden_norm is not None:
            hidden = self.hidden_norm(hidden, training=training)
        return self._activate(hidden)

    def _activate(self, values: keras.KerasTensor) -> keras.KerasTensor:
        return ops.relu6(values) if self.activation == "relu6" else ops.relu(values)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], self.hidden_size or self.cluster_size)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            cluster_size=self.cluster_size,
            hidden_size=self.hidden_size,
            pooling=self.pooling,
            activation=self.activation,
            use_batch_norm=self.use_batch_norm,
        )
        return config
