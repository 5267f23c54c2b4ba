"""Video-level classifiers: a pooled vector [..., F] -> class probabilities [..., C].

Multi-label: every class gets its own probability (sigmoid), not a softmax over classes.
Both heads are YouTube-8M's starter-code models, so pooling comparisons stay comparable
with the published baselines. They work on any leading shape, which lets `single_frame`
models apply them per frame [B, T, F] before averaging.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="framevlad")
class LogisticHead(keras.layers.Layer):
    """One logistic regression per class: p = sigmoid(x . W + b).

    Args:
      num_classes: C.
      l2_penalty: L2 weight on kernel and bias (YouTube-8M's LogisticModel uses 1e-8).

    Call args:
      inputs: [..., F] float.

    Returns:
      [..., C] probabilities in (0, 1).
    """

    def __init__(self, num_classes: int, l2_penalty: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.l2_penalty = l2_penalty

    def build(self, input_shape: tuple) -> None:
        regularizer = keras.regularizers.L2(self.l2_penalty)
        self.logits = keras.layers.Dense(
            self.num_classes,
            kernel_regularizer=regularizer,
            bias_regularizer=regularizer,
            name="logits",
            dtype=self.dtype_policy,
        )
        self.logits.build(input_shape)

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        return ops.sigmoid(self.logits(inputs))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.num_classes)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(num_classes=self.num_classes, l2_penalty=self.l2_penalty)
        return config


@keras.saving.register_keras_serializable(package="framevlad")
class MoeHead(keras.layers.Layer):
    """Mixture of logistic experts per class, as YouTube-8M's MoeModel.

    For each class c, M experts give sigmoid probabilities e_cm and a softmax gate over
    M + 1 options gives g_cm; the extra option is a dummy expert that always says 0, so
    p_c = sum_m g_cm e_cm can learn to stay low without saturating every expert.
    p_c lies in (0, 1) because the gates sum to 1 and the dummy keeps a positive share.

    Args:
      num_classes: C.
      num_mixtures: M, experts per class.
      l2_penalty: L2 weight on gate and expert kernels (YouTube-8M uses 1e-6).

    Call args:
      inputs: [..., F] float.

    Returns:
      [..., C] probabilities in (0, 1).
    """

    def __init__(self, num_classes: int, num_mixtures: int = 2, l2_penalty: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.num_mixtures = num_mixtures
        self.l2_penalty = l2_penalty

    def build(self, input_shape: tuple) -> None:
        regularizer = keras.regularizers.L2(self.l2_penalty)
        # As in YouTube-8M: the gate has no bias (the softmax would cancel a shared one),
        # the experts do.
        self.gate_logits = keras.layers.Dense(
            self.num_classes * (self.num_mixtures + 1),
            use_bias=False,
            kernel_regularizer=regularizer,
            name="gate_logits",
            dtype=self.dtype_policy,
        )
        self.gate_logits.build(input_shape)
        self.expert_logits = keras.layers.Dense(
            self.num_classes * self.num_mixtures,
            kernel_regularizer=regularizer,
            name="expert_logits",
            dtype=self.dtype_policy,
        )
        self.expert_logits.build(input_shape)

    def gates(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Gate weights [..., C, M + 1] (the last being the dummy expert); sum to 1 over M + 1."""
        return ops.softmax(self._per_class(self.gate_logits(inputs), self.num_mixtures + 1))

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        experts = ops.sigmoid(self._per_class(self.expert_logits(inputs), self.num_mixtures))
        return ops.sum(self.gates(inputs)[..., : self.num_mixtures] * experts, axis=-1)

    def _per_class(self, flat: keras.KerasTensor, options: int) -> keras.KerasTensor:
        """[..., options * C] -> [..., C, options], without needing the leading shape."""
        return ops.stack(ops.split(flat, options, axis=-1), axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.num_classes)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_mixtures=self.num_mixtures,
            l2_penalty=self.l2_penalty,
        )
        return config
