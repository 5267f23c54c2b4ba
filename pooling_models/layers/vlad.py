"""NetVLAD and its residual-less variant NetRVLAD, pooling frame vectors.

NetVLAD (Arandjelovic et al. 2016) was made for local image descriptors; Miech et al. 2017
("Learnable pooling with context gating") applied it to the frames of a video, where it
beat recurrent and plain-average pooling on YouTube-8M. It keeps, per cluster, how the
frames assigned to it differ from its centre, so the order of frames does not matter but
their distribution does.
"""

import keras
from keras import ops

from pooling_models.layers.assignment import ClusterPooling, cluster_sums, l2_normalize


@keras.saving.register_keras_serializable(package="framevlad")
class NetVLAD(ClusterPooling):
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

    uses_centres = True

    def _aggregate(
        self, frames: keras.KerasTensor, assignment: keras.KerasTensor
    ) -> keras.KerasTensor:
        # sum_t a_tk x_t - c_k sum_t a_tk: one matmul instead of a [B, T, K, D] residual.
        weighted = cluster_sums(assignment, frames)  # [B, K, D]
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

    uses_centres = False

    def _aggregate(
        self, frames: keras.KerasTensor, assignment: keras.KerasTensor
    ) -> keras.KerasTensor:
        return self._flatten(cluster_sums(assignment, frames))
