"""Conv pooling after Ng et al. 2015, "Beyond short snippets", adapted to frame vectors.

Ng et al. max-pool CNN activations over the frames of a clip. Their best variant ("Conv
Pooling") takes the max over time of the last convolutional layer's spatial maps, so the
pooled vector still knows *where* in the image each feature fired, and the CNN is trained
end to end through the pooling. Here frames are already global vectors (the backbone's
pooled embedding, PCA-whitened), so that spatial structure is gone before pooling starts
and the backbone is frozen: what remains is closest to their "Late Pooling" (per-frame
fully connected layers, then max over time) and, for `tconv`, their "Time-Domain
Convolution" (a temporal convolution before the max), with a stride-1 kernel over frame
vectors rather than their 3x3x10 kernel with stride 5 over conv maps.
"""

import keras

from pooling_models.layers.masking import MaskedPooling, masked_max, zero_padding

_VARIANTS = ("max", "tconv")


@keras.saving.register_keras_serializable(package="framevlad")
class ConvPooling(MaskedPooling):
    """Per-frame (or temporal) projection + ReLU, then max over the real frames.

    variant="max": h_t = relu(x_t . W + b); output max_t h_t.
    variant="tconv": h_t = relu(conv1d(x)_t), kernel `kernel_size`, "same" padding;
    output max_t h_t. Padded frames are zeroed before the convolution, so a window that
    reaches past the last real frame sees exactly the zeros "same" padding would give at
    the sequence edge: adding padding never changes an output at a real frame, and
    outputs at padded frames are excluded from the max.

    Args:
      hidden_size: width of the projection, hence of the output.
      variant: "max" or "tconv".
      kernel_size: temporal kernel length for "tconv" (ignored for "max").

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool or None.

    Returns:
      [B, hidden_size], non-negative.
    """

    def __init__(
        self, hidden_size: int = 1024, variant: str = "max", kernel_size: int = 3, **kwargs
    ):
        super().__init__(**kwargs)
        if variant not in _VARIANTS:
            raise ValueError(f"ConvPooling variant={variant!r}: expected one of {_VARIANTS}")
        self.hidden_size = hidden_size
        self.variant = variant
        self.kernel_size = kernel_size

    def build(self, frames_shape: tuple) -> None:
        if self.variant == "tconv":
            self.projection = keras.layers.Conv1D(
                self.hidden_size,
                self.kernel_size,
                padding="same",
                activation="relu",
                name="projection",
            )
        else:
            self.projection = keras.layers.Dense(
                self.hidden_size, activation="relu", name="projection"
            )
        self.projection.build(frames_shape)

    def call(
        self, frames: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        return masked_max(self.projection(zero_padding(frames, mask)), mask)

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], self.hidden_size)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size, variant=self.variant, kernel_size=self.kernel_size
        )
        return config
