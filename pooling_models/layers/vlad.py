"""NetVLAD and its residual-less variant NetRVLAD, pooling frame vectors.

NetVLAD (Arandjelovic et al. 2016) was made for local image descriptors; Miech et al. 2017
("Learnable pooling with context gating") applied it to the frames of a video, where it
beat recurrent and plain-average pooling on YouTube-8M. It keeps, per cluster, how the
frames assigned to it differ from its centre, so the order of frames does not matter but
their distribution does.
"""

import math

import keras
from keras import ops

from pooling_models.layers.assignment import SoftAssignment, l2_normalize
from pooling_models.layers.masking import MaskedPooling, zero_padding


@keras.saving.register_keras_serializable(package="framevlad")
class NetVLAD(MaskedPooling):
    """NetVLAD over frames: V_k = sum_t a_tk (x_t - c_k), intra-normalized, then L2.

    a_tk is `SoftAssignment` (softmax over K of batch-normed x_t . W; padded frames get 0).
    Each cluster's residual V_k is L2-normalized on its own (intra-normalization, which
    keeps a few bursty clusters from dominating), the K vectors are flattened
    cluster-major (index k * D + d) and the whole is L2-normalized.

    Args:
      cluster_size: K, the number of clusters.
      use_batch_norm: batch-normalize the assignment logits (over real frames only).

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, K * D], unit L2 norm.
    """

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
        self.centres = self.add_weight(
            shape=(self.cluster_size, self.feature_size),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(self.feature_size)),
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
        # sum_t a_tk x_t - c_k sum_t a_tk: one matmul instead of a [B, T, K, D] residual.
        weighted = ops.einsum("btk,btd->bkd", assignment, frames)  # [B, K, D]
        mass = ops.sum(assignment, axis=1)  # [B, K]
        residuals = weighted - ops.expand_dims(mass, -1) * self.centres
        return self._flatten(residuals)

    def _flatten(self, per_cluster: keras.KerasTensor) -> keras.KerasTensor:
        """Intra-normalizes [B, K, D], flattens to [B, K * D] and L2-normalizes."""
        per_cluster = l2_normalize(per_cluster, axis=-1)
        flat = ops.reshape(per_cluster, (-1, self.cluster_size * self.feature_size))
        return l2_normalize(flat, axis=-1)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], self.cluster_size * frames_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(cluster_size=self.cluster_size, use_batch_norm=self.use_batch_norm)
        return config


@keras.saving.register_keras_serializable(package="framevlad")
class NetRVLAD(NetVLAD):
    """NetVLAD without centres: V_k = sum_t a_tk x_t, same normalization ("residual-less").

    Miech et al. 2017 found dropping the centres costs little and saves K * D weights and
    a subtraction; the assignment alone decides what each cluster collects.

    Args:
      cluster_size: K, the number of clusters.
      use_batch_norm: batch-normalize the assignment logits (over real frames only).

    Returns:
      [B, K * D], unit L2 norm.
    """

    def build(self, frames_shape: tuple) -> None:
        self.feature_size = frames_shape[-1]
        self.assignment = SoftAssignment(
            self.cluster_size, use_batch_norm=self.use_batch_norm, name="assignment"
        )
        self.assignment.build(frames_shape)

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        frames = zero_padding(frames, mask)
        assignment = self.assignment(frames, mask=mask, training=training)  # [B, T, K]
        return self._flatten(ops.einsum("btk,btd->bkd", assignment, frames))
