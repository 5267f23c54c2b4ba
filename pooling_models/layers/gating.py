"""Context Gating (Miech et al. 2017): re-weight a vector's dimensions by the vector itself.

Applied after pooling (and after the classifier in LOUPE's models), it lets the network
suppress features that are unhelpful in context -- e.g. "tree" when "skiing" is present --
and add non-linear interactions at the cost of one D x D matrix.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="framevlad")
class ContextGating(keras.layers.Layer):
    """y = sigmoid(x . W + b) * x, with batch norm of x . W in place of b if asked.

    Meant for video-level vectors [B, F] (a pooled vector or class scores); its batch norm
    is the ordinary one over the batch, so do not feed it padded per-frame tensors.

    Args:
      use_batch_norm: batch-normalize x . W (LOUPE's default) instead of adding a bias.

    Call args:
      inputs: [..., F] float.

    Returns:
      [..., F], each entry scaled by a gate in (0, 1).
    """

    def __init__(self, use_batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_batch_norm = use_batch_norm

    def build(self, input_shape: tuple) -> None:
        self.gate = keras.layers.Dense(
            input_shape[-1],
            use_bias=not self.use_batch_norm,
            name="gate",
            dtype=self.dtype_policy,
        )
        self.gate.build(input_shape)
        self.gate_norm = None
        if self.use_batch_norm:
            self.gate_norm = keras.layers.BatchNormalization(
                name="gate_norm", dtype=self.dtype_policy
            )
            self.gate_norm.build(input_shape)

    def call(self, inputs: keras.KerasTensor, training: bool | None = None) -> keras.KerasTensor:
        gates = self.gate(inputs)
        if self.gate_norm is not None:
            gates = self.gate_norm(gates, training=training)
        return ops.sigmoid(gates) * inputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(use_batch_norm=self.use_batch_norm)
        return config
