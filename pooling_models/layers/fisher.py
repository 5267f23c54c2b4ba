"""NetFV: a learnable Fisher Vector over frames (Miech et al. 2017, LOUPE).

A Fisher Vector describes a set of descriptors by the gradient of a Gaussian mixture's
log-likelihood: first-order statistics (how far frames sit from each centre, in units of
that cluster's spread) and second-order ones (whether they spread more or less than the
cluster expects). NetVLAD keeps only the first; the second helps when videos differ in
how varied their frames are rather than where they sit.
"""

import math

import keras
from keras import ops

from pooling_models.layers.assignment import ClusterPooling, cluster_sums, l2_normalize

# Keeps the learned spread strictly positive even when its square-root weight hits zero.
_MIN_SIGMA = 1e-6


@keras.saving.register_keras_serializable(package="framevlad")
class NetFV(ClusterPooling):
    """Learned Fisher Vector: first- and second-order cluster statistics, [B, 2 * K * D].

    With soft assignment a_tk (`SoftAssignment`), centres c_k and per-cluster diagonal
    spreads sigma_k = w_k ** 2 + 1e-6 (learned through w so they stay positive):

      first_k  = sum_t a_tk (x_t - c_k) / sigma_k
      second_k = sum_t a_tk ((x_t - c_k) ** 2 / sigma_k ** 2 - 1)

    Normalized as LOUPE describes it: the first-order part is intra-normalized per cluster,
    flattened and L2-normalized (as NetVLAD); the second-order part is flattened and
    L2-normalized as a whole. The two unit vectors are concatenated (first, then second),
    each flattened cluster-major. The GMM's mixture-weight factors of the textbook Fisher
    Vector are dropped, as in LOUPE: the learned assignment absorbs them.

    Args:
      cluster_size: K, the number of clusters.
      use_batch_norm: batch-normalize the assignment logits (over real frames only).

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, 2 * K * D]; each half has unit L2 norm.
    """

    uses_centres = True

    def build(self, frames_shape: tuple) -> None:
        super().build(frames_shape)
        self.sigma_roots = self.add_weight(
            shape=(self.cluster_size, self.feature_size),
            initializer=keras.initializers.RandomNormal(
                mean=1.0, stddev=2.0 / math.sqrt(self.feature_size)
            ),
            name="sigma_roots",
        )

    def _aggregate(
        self, frames: keras.KerasTensor, assignment: keras.KerasTensor
    ) -> keras.KerasTensor:
        mass = ops.expand_dims(ops.sum(assignment, axis=1), -1)  # [B, K, 1]
        weighted = cluster_sums(assignment, frames)  # [B, K, D]
        weighted_squares = cluster_sums(assignment, ops.square(frames))
        sigma = ops.square(self.sigma_roots) + _MIN_SIGMA  # [K, D]

        # Expanding (x - c)^2 keeps everything to [B, K, D] sums, never [B, T, K, D].
        first = (weighted - mass * self.centres) / sigma
        squared_residuals = (
            weighted_squares - 2.0 * self.centres * weighted + mass * ops.square(self.centres)
        )
        second = squared_residuals / ops.square(sigma) - mass

        flat_size = self.cluster_size * self.feature_size
        first = ops.reshape(l2_normalize(first, axis=-1), (-1, flat_size))
        second = ops.reshape(second, (-1, flat_size))
        return ops.concatenate([l2_normalize(first), l2_normalize(second)], axis=-1)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], 2 * self.cluster_size * frames_shape[-1])
