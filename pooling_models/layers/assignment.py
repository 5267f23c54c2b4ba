"""Soft assignment of frames to learned clusters, shared by the NetVLAD family.

NetVLAD, NetRVLAD, NetFV and soft-DBoW (Miech et al. 2017, "Learnable pooling with
context gating for video classification") all start the same way: every frame is softly
assigned to K clusters by a softmax over a linear map. Keeping that in one layer means the
batch-norm and padding rules are written once; `ClusterPooling` is the base those
poolings (and NeXtVLAD) share, so their config and weights are declared once too.
"""

import math

import keras
from keras import ops

from pooling_models.layers.masking import MaskedBatchNormalization, MaskedPooling, zero_padding


@keras.saving.register_keras_serializable(package="framevlad")
class SoftAssignment(keras.layers.Layer):
    """a_tk = softmax_k(BN(x_t . W)) for real frames; padded frames get a_tk = 0.

    Zero assignment for padding is what makes every aggregate built on top (sums of a_tk,
    a_tk * x_t, ...) ignore padded frames exactly.

    Args:
      cluster_size: K, the number of clusters.
      use_batch_norm: batch-normalize the logits over real frames (as LOUPE does); when
        False a learned per-cluster bias takes its place.

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, T, K] assignments; each real frame's row sums to 1, padded rows are 0.
    """

    def __init__(self, cluster_size: int, use_batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.cluster_size = cluster_size
        self.use_batch_norm = use_batch_norm

    def build(self, frames_shape: tuple) -> None:
        feature_size = frames_shape[-1]
        self.cluster_weights = self.add_weight(
            shape=(feature_size, self.cluster_size),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(feature_size)),
            name="cluster_weights",
        )
        if self.use_batch_norm:
            self.logits_norm = MaskedBatchNormalization(name="logits_norm")
            self.logits_norm.build((*frames_shape[:-1], self.cluster_size))
            self.cluster_biases = None
        else:
            self.cluster_biases = self.add_weight(
                shape=(self.cluster_size,),
                initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(feature_size)),
                name="cluster_biases",
            )

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        logits = ops.matmul(zero_padding(frames, mask), self.cluster_weights)  # [B, T, K]
        if self.use_batch_norm:
            logits = self.logits_norm(logits, mask=mask, training=training)
        else:
            logits = logits + self.cluster_biases
        return zero_padding(ops.softmax(logits, axis=-1), mask)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (*frames_shape[:-1], self.cluster_size)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(cluster_size=self.cluster_size, use_batch_norm=self.use_batch_norm)
        return config


class ClusterPooling(MaskedPooling):
    """Base of the poolings over K learned clusters: NetVLAD, NetRVLAD, NetFV, soft-DBoW, NeXtVLAD.

    Owns the args they share and their config; `build` makes `self.assignment` (a
    `SoftAssignment`, weights under "assignment/") and, where the class sets
    `uses_centres`, K centres of the frame width D (`self.centres`, weight "centres");
    `call` zeroes the padding, assigns the frames and hands both to `_aggregate`, the one
    method a subclass must write. NeXtVLAD assigns groups of expanded frames, so it builds
    and calls its own way and takes only the args, the config and `_add_centres` from here.
    Not registered: only its subclasses are ever saved.

    Args:
      cluster_size: K, the number of clusters.
      use_batch_norm: batch-normalize the assignment logits (over real frames only).
    """

    uses_centres = False

    def __init__(self, cluster_size: int, use_batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.cluster_size = cluster_size
        self.use_batch_norm = use_batch_norm

    def build(self, frames_shape: tuple) -> None:
        self.feature_size = frames_shape[-1]
        self.assignment = SoftAssignment(
            self.cluster_size, use_batch_norm=self.use_batch_norm, name="assignment"
        )
        self.assignment.build(frames_shape)
        if self.uses_centres:
            self.centres = self._add_centres(self.feature_size)

    def _add_centres(self, centre_size: int) -> keras.Variable:
        """K learned centres [K, centre_size]; entries ~ N(0, 1 / centre_size), norms ~ 1."""
        return self.add_weight(
            shape=(self.cluster_size, centre_size),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(centre_size)),
            name="centres",
        )

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        frames = zero_padding(frames, mask)
        assignment = self.assignment(frames, mask=mask, training=training)  # [B, T, K]
        return self._aggregate(frames, assignment)

    def _aggregate(
        self, frames: keras.KerasTensor, assignment: keras.KerasTensor
    ) -> keras.KerasTensor:
        """Frames [B, T, D] and assignment [B, T, K], both zero on padding -> [B, P]."""
        raise NotImplementedError(f"{type(self).__name__} must define _aggregate")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(cluster_size=self.cluster_size, use_batch_norm=self.use_batch_norm)
        return config


def cluster_sums(assignment: keras.KerasTensor, values: keras.KerasTensor) -> keras.KerasTensor:
    """sum_t a_tk v_t: assignment [B, T, K] and values [B, T, D] -> [B, K, D]."""
    return ops.einsum("btk,btd->bkd", assignment, values)


def l2_normalize(values: keras.KerasTensor, axis: int = -1) -> keras.KerasTensor:
    """values / ||values|| along `axis`; an all-zero slice (an empty cluster) stays zero.

    The floor goes on the squared norm, as in `tf.math.l2_normalize`, so an all-zero slice
    has a finite gradient; `keras.ops.normalize` floors after the rsqrt and gives NaN there.
    """
    squared_norm = ops.sum(ops.square(values), axis=axis, keepdims=True)
    return values * ops.rsqrt(ops.maximum(squared_norm, 1e-24))
