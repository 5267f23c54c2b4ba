"""The flow stream's CNN: an rgb backbone whose first convolution reads 2L flow channels.

Input: uint8 [B, H, W, 2L] stacks of FLOW_PAIRS displacement fields (channel 2k = x,
2k + 1 = y of pair k), each value round(d / FLOW_CLIP_PX * 127.5 + 127.5); output: float32
[B, D] pooled features, D and (H, W) those of the rgb backbone.

Cross-modality initialisation (TSN, Wang et al. 2016): the first convolution's ImageNet
filters are averaged over R, G, B and the average is replicated over the 2L flow channels;
every other weight is the rgb network's. We also divide the replicated filter by 2L / 3, so
that a stack whose 2L channels all hold one grey image g gives exactly the rgb network's
features of the grey frame (g, g, g) (the sum of a filter's input weights is what a grey
input sees, and it is kept). TSN fine-tunes its flow net; ours is used frozen, so its
BatchNorm statistics only fit if the first activations keep their ImageNet scale.

Preprocessing maps "no motion" (127.5) to the zero of the backbone's input range and keeps
the range's scale: "inception" x / 127.5 - 1 (d / 20 px in [-1, 1]); "caffe" x - 127.5
(TSN subtracts 128 from its flow images; the channel-averaged ImageNet mean, 114.8, would
read as a constant motion of +2 px); MobileNetV3 rescales internally to x / 127.5 - 1
already; EfficientNet's per-channel Normalization gets mean 127.5 / 255 on every channel
and the channel average of its RGB variances.
"""

from __future__ import annotations

import keras
import numpy as np

from features import backbones
from features.backbones import BackboneError, BackboneSpec
from features.formats import FLOW_PAIRS

FLOW_CHANNELS = 2 * FLOW_PAIRS
NO_MOTION = 127.5  # the uint8 value of a zero displacement
FLOW_FLAG = "--flow_weights"


@keras.saving.register_keras_serializable(package="framevlad")
class FlowPreprocessing(keras.layers.Layer):
    """uint8 flow stacks -> the backbone's input range, no motion at 0 (see module doc).

    Modes as FramePreprocessing's: "inception" (x / 127.5 - 1), "caffe" (x - 127.5) and
    "none" (float 0..255, for networks that rescale internally).
    """

    def __init__(self, mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in backbones.FramePreprocessing.MODES:
            modes = ", ".join(backbones.FramePreprocessing.MODES)
            raise BackboneError(f"preprocessing {mode!r}: choose one of {modes}")
        self.mode = mode

    def call(self, flow):
        x = keras.ops.cast(flow, "float32")
        if self.mode == "inception":
            return x / NO_MOTION - 1.0
        if self.mode == "caffe":
            return x - NO_MOTION
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def flow_input_shape(name: str) -> tuple[int, int, int]:
    """(H, W, 2L) of backbone `name`'s flow network."""
    return (*backbones.get_spec(name).input_size, FLOW_CHANNELS)


def build_flow_backbone(name: str, weights: str = "random", seed: int = 0) -> keras.Model:
    """uint8 [B, H, W, 2L] flow stacks -> float32 [B, D] features of backbone `name`.

    `weights`: "imagenet" (the rgb ImageNet file in the Keras cache, adapted), "random"
    (seeded He init of the flow net itself, fan-in over 2L channels), or a file: a
    `.weights.h5` this model saved, else any rgb weights file build_backbone accepts, adapted.
    """
    spec = backbones.get_spec(name)
    source = backbones.resolve_weights(name, weights, seed, FLOW_FLAG)
    model = _flow_model(spec)
    if source.kind == "random":
        backbones.reinitialise(model, seed)
        _set_flow_normalization(model, None)
        return model
    if source.kind == "path" and source.path.endswith(".weights.h5"):
        try:
            backbones.load_first_fitting(source.path, f"{FLOW_FLAG} {weights}", model)
            return model
        except BackboneError as flow_error:
            try:
                rgb = backbones.build_backbone(name, source.path, seed, FLOW_FLAG)
            except BackboneError as rgb_error:
                raise BackboneError(
                    f"{rgb_error} (nor is it {name}'s flow model: {flow_error})"
                ) from None
    else:
        rgb = backbones.build_backbone(name, source.path, seed, FLOW_FLAG)
    adapt_rgb_weights(rgb, model)
    return model


def adapt_rgb_weights(rgb: keras.Model, flow: keras.Model) -> None:
    """Copy rgb backbone `rgb`'s weights into flow model `flow` of the same architecture:
    the first convolution cross-modality initialised, the input normalisation adapted."""
    rgb_layers = [x for x in backbones.leaf_layers(rgb) if x.weights]
    flow_layers = [x for x in backbones.leaf_layers(flow) if x.weights]
    if [type(x) for x in rgb_layers] != [type(x) for x in flow_layers]:
        raise BackboneError(f"{rgb.name} and {flow.name} are not the same architecture")
    for source, target in zip(rgb_layers, flow_layers, strict=True):
        if isinstance(source, keras.layers.Normalization):
            _set_flow_normalization(flow, np.asarray(source.adapt_variance))
            continue
        for rgb_value, variable in zip(source.get_weights(), target.weights, strict=True):
            if rgb_value.shape != tuple(variable.shape):
                rgb_value = cross_modality_kernel(rgb_value, tuple(variable.shape))
            variable.assign(rgb_value)


def cross_modality_kernel(kernel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """[kh, kw, 3, cout] RGB filters -> [kh, kw, C, cout]: the channel mean, replicated and
    scaled by 3 / C so that a grey input's response is unchanged (see module doc)."""
    kh, kw, rgb_channels, filters = kernel.shape if kernel.ndim == 4 else (0, 0, 0, 0)
    if rgb_channels != 3 or len(shape) != 4 or shape != (kh, kw, shape[2], filters):
        raise BackboneError(f"cannot adapt an rgb weight {list(kernel.shape)} to {list(shape)}")
    channels = shape[2]
    mean = kernel.mean(axis=2, keepdims=True) * np.float32(3.0 / channels)
    return np.repeat(mean, channels, axis=2).astype(np.float32)


def _flow_model(spec: BackboneSpec) -> keras.Model:
    flow = keras.Input(flow_input_shape(spec.name), dtype="uint8", name="flow")
    base = backbones.build_architecture(spec, FLOW_CHANNELS)
    features = base(FlowPreprocessing(spec.preprocessing)(flow))
    return keras.Model(flow, features, name=f"{spec.name}_flow")


def _set_flow_normalization(flow: keras.Model, rgb_variance: np.ndarray | None) -> None:
    """A built-in Normalization (EfficientNet) centres no motion at 0 on every channel and
    divides by the RGB variances' mean (1 when there is no rgb network: random weights).

    The value no motion has there is NO_MOTION through the Rescaling before it."""
    scale, offset = 1.0, 0.0
    for layer in backbones.leaf_layers(flow):
        if isinstance(layer, keras.layers.Rescaling):
            scale, offset = float(layer.scale), float(layer.offset)
        if isinstance(layer, keras.layers.Normalization):
            variance = 1.0 if rgb_variance is None else float(np.mean(rgb_variance))
            layer.adapt_mean.assign(np.full(FLOW_CHANNELS, NO_MOTION * scale + offset, "float32"))
            layer.adapt_variance.assign(np.full(FLOW_CHANNELS, variance, "float32"))
            layer.finalize_state()
