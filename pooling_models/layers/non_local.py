"""Non-local temporal pooling: a self-attention block over the frames, then NetVLAD or a mean.

Order-free poolings (NetVLAD, mean) see each frame alone before aggregating. Wang et al.
2018 ("Non-local neural networks") let every position add a weighted sum of all others,
weighted by how similar their embeddings are, before any pooling: here a frame can borrow
the context of the rest of the video (a shot that only makes sense beside another). The
block is residual, so whatever the pooling after it learned from plain frames stays
reachable.

The module is `non_local`: `nonlocal` is a Python keyword.
"""

import math

import keras
from keras import ops

from pooling_models.layers.masking import MaskedPooling, zero_padding
from pooling_models.layers.simple import MeanPooling
from pooling_models.layers.vlad import NetVLAD
from pooling_models.model_config import NONLOCAL_POOLS


@keras.saving.register_keras_serializable(package="framevlad")
class NonLocalBlock(keras.layers.Layer):
    """Masked embedded-Gaussian non-local block: z_t = x_t + W_z sum_s a_ts g(x_s).

    With theta, phi, g linear maps to a bottleneck width C (Wang et al. use half the input
    width) and a_ts = softmax_s(theta(x_t) . phi(x_s) / sqrt(C)) over the real frames s only
    (padded keys get weight 0). The 1/sqrt(C) keeps the softmax from saturating as C grows
    (as scaled dot-product attention); it is a constant factor inside the embeddings, so
    the family of functions is Wang et al.'s. W_z maps back to D; it starts at zero (their
    zero-initialised batch-norm scale), so a new block is exactly the identity and training
    starts from the plain-frame model. Padded rows come out zero.

    Args:
      bottleneck_size: C; 0 = half the frame width (at least 1).
      output_initializer: a Keras initializer name for W_z; "zeros" starts at the identity.

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, T, D], zero at padded positions; the mask passes through.
    """

    def __init__(self, bottleneck_size: int = 0, output_initializer: str = "zeros", **kwargs):
        super().__init__(**kwargs)
        if bottleneck_size < 0:
            raise ValueError(f"NonLocalBlock bottleneck_size={bottleneck_size}: must be >= 0")
        self.supports_masking = True
        self.bottleneck_size = bottleneck_size
        self.output_initializer = output_initializer

    def build(self, frames_shape: tuple) -> None:
        feature_size = frames_shape[-1]
        self.width = self.bottleneck_size or max(1, feature_size // 2)
        self.theta = keras.layers.Dense(self.width, name="theta")
        self.phi = keras.layers.Dense(self.width, name="phi")
        self.g = keras.layers.Dense(self.width, name="g")
        self.output_projection = keras.layers.Dense(
            feature_size,
            kernel_initializer=keras.initializers.get(self.output_initializer),
            name="output_projection",
        )
        for layer in (self.theta, self.phi, self.g):
            layer.build(frames_shape)
        self.output_projection.build((*frames_shape[:-1], self.width))

    def call(
        self, frames: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        frames = zero_padding(frames, mask)  # garbage (even NaN) never reaches a product
        queries, keys, values = self.theta(frames), self.phi(frames), self.g(frames)  # [B, T, C]
        logits = ops.einsum("btc,bsc->bts", queries, keys) / math.sqrt(self.width)  # [B, T, T]
        if mask is not None:
            keep = ops.expand_dims(ops.cast(mask, "bool"), 1)  # [B, 1, T]: real keys
            logits = ops.where(keep, logits, ops.full_like(logits, float("-inf")))
        attention = ops.softmax(logits, axis=-1)  # every video has a real frame: no 0/0
        context = ops.einsum("bts,bsc->btc", attention, values)  # [B, T, C]
        return zero_padding(frames + self.output_projection(context), mask)

    def compute_mask(self, frames, mask=None):
        return mask

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return frames_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            bottleneck_size=self.bottleneck_size, output_initializer=self.output_initializer
        )
        return config


@keras.saving.register_keras_serializable(package="framevlad")
class NonLocalPooling(MaskedPooling):
    """A `NonLocalBlock` over the frames, then NetVLAD (K clusters) or the masked mean.

    Padded frames are never attended to, and their rows are zeroed and masked before the
    pooling, so padding never changes the pooled vector.

    Args:
      cluster_size: K of the NetVLAD pooling (ignored for pooling="mean").
      pooling: "netvlad" or "mean".
      bottleneck_size: the block's width C; 0 = half the frame width.
      use_batch_norm: batch-normalize NetVLAD's assignment logits.
      output_initializer: initializer of the block's output projection ("zeros": identity).

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, K * D] (netvlad, unit L2 norm) or [B, D] (mean).
    """

    def __init__(
        self,
        cluster_size: int = 64,
        pooling: str = "netvlad",
        bottleneck_size: int = 0,
        use_batch_norm: bool = True,
        output_initializer: str = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in NONLOCAL_POOLS:
            raise ValueError(
                f"NonLocalPooling pooling={pooling!r}: expected one of {NONLOCAL_POOLS}"
            )
        self.cluster_size = cluster_size
        self.pooling = pooling
        self.bottleneck_size = bottleneck_size
        self.use_batch_norm = use_batch_norm
        self.output_initializer = output_initializer

    def build(self, frames_shape: tuple) -> None:
        self.block = NonLocalBlock(
            self.bottleneck_size, output_initializer=self.output_initializer, name="block"
        )
        self.block.build(frames_shape)
        if self.pooling == "netvlad":
            self.aggregate = NetVLAD(
                self.cluster_size, use_batch_norm=self.use_batch_norm, name="netvlad"
            )
        else:
            self.aggregate = MeanPooling(name="mean")
        self.aggregate.build(frames_shape)

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        attended = self.block(frames, mask=mask)
        if self.pooling == "netvlad":
            return self.aggregate(attended, mask=mask, training=training)
        return self.aggregate(attended, mask=mask)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        width = frames_shape[-1] * (self.cluster_size if self.pooling == "netvlad" else 1)
        return (frames_shape[0], width)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            cluster_size=self.cluster_size,
            pooling=self.pooling,
            bottleneck_size=self.bottleneck_size,
            use_batch_norm=self.use_batch_norm,
            output_initializer=self.output_initializer,
        )
        return config
