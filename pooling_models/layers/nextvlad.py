"""NeXtVLAD (Lin et al. 2018): NetVLAD on grouped, expanded frames, with far fewer outputs.

NetVLAD's output is K * D, which for 1024-d frames and K = 64 already means a 64k-wide
first classifier layer. NeXtVLAD expands each frame by lambda, splits it into G groups of
lambda * D / G dims, and aggregates all groups into the same K clusters, each group's
contribution weighted by a learned attention. The output shrinks to K * lambda * D / G
(G = 8, lambda = 2: a quarter of NetVLAD's), which the paper reports at equal or better
accuracy on YouTube-8M.
"""

import keras
from keras import ops

from pooling_models.layers.assignment import ClusterPooling, l2_normalize
from pooling_models.layers.masking import MaskedBatchNormalization, zero_padding


@keras.saving.register_keras_serializable(package="framevlad")
class NeXtVLAD(ClusterPooling):
    """NeXtVLAD pooling of frames -> [B, K * expansion * D / groups].

    Per real frame x_t: x~ = x_t . W_e + b_e (expansion to lambda * D); group attention
    alpha_g = sigmoid(x~ . W_g + b_g); per-group soft assignment
    a_gk = softmax_k(BN(x~ . W_c))_gk, computed from the whole expanded frame. With x~_g the
    g-th slice of x~ and c_k centres of the slice size:

      V_k = sum_t sum_g alpha_g a_gk (x~_g - c_k)

    Each V_k is intra-normalized, the K vectors are flattened cluster-major and, as in the
    paper's code, batch-normalized (over videos) instead of a global L2 norm. Padded frames
    get zero assignment, and the per-frame batch norm sees real frames only.

    Args:
      cluster_size: K, the number of clusters.
      expansion: lambda, the frame expansion factor.
      groups: G; expansion * D must be divisible by it.
      use_batch_norm: batch-normalize the assignment logits and the output.

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, cluster_size * expansion * D // groups].
    """

    def __init__(
        self,
        cluster_size: int,
        expansion: int = 2,
        groups: int = 8,
        use_batch_norm: bool = True,
        **kwargs,
    ):
        super().__init__(cluster_size, use_batch_norm=use_batch_norm, **kwargs)
        self.expansion = expansion
        self.groups = groups

    def build(self, frames_shape: tuple) -> None:
        # Replaces the base build: the assignment here is per group, of the expanded frame.
        expanded_size = self.expansion * frames_shape[-1]
        if expanded_size % self.groups:
            raise ValueError(
                f"NeXtVLAD: expansion * feature size = {expanded_size} is not divisible by "
                f"groups={self.groups}"
            )
        self.group_size = expanded_size // self.groups
        expanded_shape = (*frames_shape[:-1], expanded_size)
        self.expand = keras.layers.Dense(expanded_size, name="expand")
        self.expand.build(frames_shape)
        self.attention = keras.layers.Dense(self.groups, activation="sigmoid", name="attention")
        self.attention.build(expanded_shape)
        self.assignment_logits = keras.layers.Dense(
            self.groups * self.cluster_size,
            use_bias=not self.use_batch_norm,
            name="assignment_logits",
        )
        self.assignment_logits.build(expanded_shape)
        self.assignment_norm = None
        self.output_norm = None
        if self.use_batch_norm:
            self.assignment_norm = MaskedBatchNormalization(name="assignment_norm")
            self.assignment_norm.build((*frames_shape[:-1], self.groups * self.cluster_size))
            self.output_norm = keras.layers.BatchNormalization(name="output_norm")
            self.output_norm.build((frames_shape[0], self.cluster_size * self.group_size))
        self.centres = self._add_centres(self.group_size)

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        expanded = self.expand(zero_padding(frames, mask))  # [B, T, lambda * D]
        batch, steps = ops.shape(expanded)[0], ops.shape(expanded)[1]
        logits = self.assignment_logits(expanded)  # [B, T, G * K]
        if self.assignment_norm is not None:
            logits = self.assignment_norm(logits, mask=mask, training=training)
        logits = ops.reshape(logits, (batch, steps, self.groups, self.cluster_size))
        attention = ops.expand_dims(self.attention(expanded), -1)  # [B, T, G, 1]
        assignment = zero_padding(ops.softmax(logits, axis=-1) * attention, mask)
        grouped = ops.reshape(expanded, (batch, steps, self.groups, self.group_size))

        weighted = ops.einsum("btgk,btgs->bks", assignment, grouped)  # [B, K, S]
        mass = ops.sum(assignment, axis=(1, 2))  # [B, K]
        residuals = weighted - ops.expand_dims(mass, -1) * self.centres
        flat = ops.reshape(
            l2_normalize(residuals, axis=-1), (-1, self.cluster_size * self.group_size)
        )
        if self.output_norm is not None:
            flat = self.output_norm(flat, training=training)
        return flat

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        output_size = self.cluster_size * self.expansion * frames_shape[-1] // self.groups
        return (frames_shape[0], output_size)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(expansion=self.expansion, groups=self.groups)
        return config
