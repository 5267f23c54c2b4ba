"""Stacked LSTM / GRU pooling: the video is the final state of a recurrent net over frames.

The order-aware baseline of Ng et al. 2015 and of the YouTube-8M starter code. On
YouTube-8M it trails the order-free poolings (NetVLAD, DBoF), which is itself a finding
worth reproducing.
"""

import keras

from pooling_models.layers.masking import MaskedPooling, zero_padding


class _StackedRecurrent(MaskedPooling):
    """`num_layers` recurrent layers; returns the last layer's state after the last real frame.

    The mask goes to every recurrent layer, so states are carried unchanged through padded
    steps and the "final" state is the one after each video's own last frame. Masks must be
    right-padded (real frames first, as `FrameMask` builds them): on a GPU Keras runs
    these layers with cuDNN, which only accepts right-padded masks and asserts so.
    Subclasses only name the Keras layer to stack, `recurrent_class`.

    Args:
      units: state size of every layer, hence of the output.
      num_layers: how many recurrent layers to stack.
    """

    recurrent_class: type[keras.layers.RNN]

    def __init__(self, units: int = 1024, num_layers: int = 2, **kwargs):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__} num_layers={num_layers}: need at least 1")
        self.units = units
        self.num_layers = num_layers

    def build(self, frames_shape: tuple) -> None:
        self.recurrent_layers = []
        inputs_shape = frames_shape
        for index in range(self.num_layers):
            layer = self.recurrent_class(
                self.units, return_sequences=index < self.num_layers - 1, name=f"recurrent_{index}"
            )
            layer.build(inputs_shape)
            self.recurrent_layers.append(layer)
            inputs_shape = (*frames_shape[:-1], self.units)

    def call(
        self,
        frames: keras.KerasTensor,
        mask: keras.KerasTensor | None = None,
        training: bool | None = None,
    ) -> keras.KerasTensor:
        states = zero_padding(frames, mask)
        for layer in self.recurrent_layers:
            states = layer(states, mask=mask, training=training)
        return states

    def compute_output_shape(self, frames_shape: tuple) -> tuple:
        return (frames_shape[0], self.units)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(units=self.units, num_layers=self.num_layers)
        return config


@keras.saving.register_keras_serializable(package="framevlad")
class LSTMPooling(_StackedRecurrent):
    """Stacked LSTM; output is the last layer's hidden state h at the last real frame.

    Args:
      units: state size of every layer (default 1024), hence of the output.
      num_layers: how many LSTMs to stack (default 2).

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool, right-padded, or None.

    Returns:
      [B, units].
    """

    recurrent_class = keras.layers.LSTM


@keras.saving.register_keras_serializable(package="framevlad")
class GRUPooling(_StackedRecurrent):
    """Stacked GRU; output is the last layer's state at the last real frame.

    Args:
      units: state size of every layer (default 1024), hence of the output.
      num_layers: how many GRUs to stack (default 2).

    Call args:
      frames: [B, T, D] float.
      mask: [B, T] bool, right-padded, or None.

    Returns:
      [B, units].
    """

    recurrent_class = keras.layers.GRU
