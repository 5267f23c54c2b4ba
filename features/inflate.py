"""I3D inflation (Carreira & Zisserman 2017): a registry backbone's 2D graph, run on clips.

`inflate` walks the functional graph of a build_backbone model node by node and rebuilds
every layer for [B, T, H, W, C] tensors, with the 2D weights inflated: uint8 [B, F, H, W, 3]
clips -> float32 [B, D]. Nothing is written per architecture; a layer type the walk does
not know is an error, never silently dropped.

Temporal choices:
- A convolution or pooling window whose spatial extent is > 1 gets TEMPORAL_KERNEL = 3
  frames, a 1 x 1 one gets 1; an inflated kernel is the 2D kernel repeated over t and
  divided by t, so a clip of one repeated frame ("boring") gives the 2D features exactly.
- Time is padded by repeating the edge frames, never with zeros (a zero frame would make a
  boring clip's edges differ from its middle). Where only one frame is left, t becomes 1:
  a window over one repeated frame is the sum of its taps, and costs t times less.
- The first TEMPORAL_STRIDES levels of spatial down-sampling also halve time, 16 -> 8 -> 4
  -> 2 frames (a spatially strided layer gets temporal stride 2 while its input has more
  than F / 2**TEMPORAL_STRIDES frames; parallel branches of a reduction block share their
  input, so they agree). Multiply-adds of one 16-frame clip over those of one frame through
  the 2D network (multiply_adds): inception_v3 7.8, resnet50 5.3, efficientnet_b0 3.9,
  mobilenet_v3_small 4.9, tiny 8.9 (its three costly layers all have t = 3). InceptionV3
  spends 33% of a clip's multiply-adds at 8 frames (the stem), 19% at 4 and 48% at 2;
  giving its 1 x 7 and 7 x 1 kernels t = 1 too would bring it from 7.8 to 6.6.
- Squeeze-excite's global pooling pools over (T, H, W), as global pooling does everywhere:
  the gate of a clip's channels is one vector, as the 2D gate is one per frame.
- Convolutions, depthwise ones included, run as a sum over their t taps of the 2D op on
  the frames of that tap (folded into the batch), so spatial padding is the 2D layer's
  exactly and no grouped Conv3D is needed (TensorFlow's does not run on CPU).
- BatchNorm, activations, Add, Multiply, Concatenate, Rescaling, Normalization, Dropout and
  the backbone's preprocessing act per element or channel and are kept (a positive axis
  moves one to the right); ZeroPadding2D pads space only.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np

from features import backbones
from features.backbones import BackboneError, FramePreprocessing, leaf_layers
from features.formats import CLIP_FRAMES

TEMPORAL_KERNEL = 3
TEMPORAL_STRIDES = 3
I3D_FLAG = "--i3d_weights"

# Layers that act per element or per channel: rebuilt from their config, weights copied.
_PER_ELEMENT = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.Concatenate,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Dropout,
    FramePreprocessing,
)
# keras.ops calls in a graph (MobileNetV3's hard sigmoid is `relu6(x + 3) * (1 / 6)`), which
# are Operations, not Layers: elementwise ones carry over.
_ELEMENTWISE_OPS = {
    "Add": keras.ops.add,
    "Subtract": keras.ops.subtract,
    "Multiply": keras.ops.multiply,
    "Divide": keras.ops.divide,
    "TrueDivide": keras.ops.true_divide,
    "Maximum": keras.ops.maximum,
    "Minimum": keras.ops.minimum,
}


def _temporal_taps(frames: int, window: int, stride: int) -> list[np.ndarray]:
    """For each of `window` taps, the input frame of each output frame: time padded as
    "same" padding would (ceil(T / stride) outputs), by repeating the edge frames."""
    outputs = math.ceil(frames / stride)
    before = max((outputs - 1) * stride + window - frames, 0) // 2
    starts = np.arange(outputs) * stride - before
    return [np.clip(starts + tap, 0, frames - 1) for tap in range(window)]


def _per_frame(op, x, indices: np.ndarray | None = None):
    """2D op [n, H, W, C] -> [n, H', W', C'] on frames `indices` (all: None) of x
    [B, T, H, W, C], folded into the batch -> [B, len(indices), H', W', C']."""
    frames = x if indices is None else keras.ops.take(x, indices, axis=1)
    y = op(keras.ops.reshape(frames, (-1, *x.shape[2:])))
    return keras.ops.reshape(y, (-1, frames.shape[1], *y.shape[1:]))


@keras.saving.register_keras_serializable(package="framevlad")
class InflatedConv(keras.layers.Layer):
    """[B, T, H, W, Cin] -> [B, T', H', W', Cout]: a Conv2D or DepthwiseConv2D with a
    temporal extent; kernel [t, kh, kw, Cin, filters] (depthwise: filters = multiplier)."""

    def __init__(
        self,
        filters: int,
        kernel_size: tuple[int, int, int],
        strides: tuple[int, int, int],
        padding: str,
        dilation_rate: tuple[int, int] = (1, 1),
        use_bias: bool = True,
        activation: str | None = None,
        depthwise: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = tuple(kernel_size)
        self.strides = tuple(strides)
        self.padding = padding
        self.dilation_rate = tuple(dilation_rate)
        self.use_bias = use_bias
        self.activation = keras.activations.get(activation)
        self.depthwise = depthwise

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, channels, self.filters)
        )
        outputs = channels * self.filters if self.depthwise else self.filters
        self.bias = self.add_weight(name="bias", shape=(outputs,)) if self.use_bias else None

    def call(self, x):
        op = keras.ops.depthwise_conv if self.depthwise else keras.ops.conv
        y = 0.0
        taps = _temporal_taps(x.shape[1], self.kernel_size[0], self.strides[0])
        for tap, indices in enumerate(taps):
            conv = functools.partial(
                op,
                kernel=self.kernel[tap],
                strides=self.strides[1:],
                padding=self.padding,
                dilation_rate=self.dilation_rate,
            )
            y = y + _per_frame(conv, x, indices)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "use_bias": self.use_bias,
            "activation": keras.activations.serialize(self.activation),
            "depthwise": self.depthwise,
        }


@keras.saving.register_keras_serializable(package="framevlad")
class InflatedPool(keras.layers.Layer):
    """[B, T, H, W, C] -> [B, T', H', W', C]: a 2D max or average pool per frame, then the
    same over a temporal window (both are separable, and the 2D op keeps its padding rule)."""

    def __init__(
        self,
        kind: str,
        pool_size: tuple[int, int, int],
        strides: tuple[int, int, int],
        padding: str,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.pool_size = tuple(pool_size)
        self.strides = tuple(strides)
        self.padding = padding

    def call(self, x):
        op = keras.ops.max_pool if self.kind == "max" else keras.ops.average_pool
        pool = functools.partial(
            op, pool_size=self.pool_size[1:], strides=self.strides[1:], padding=self.padding
        )
        x = _per_frame(pool, x)
        taps = _temporal_taps(x.shape[1], self.pool_size[0], self.strides[0])
        windows = keras.ops.stack([keras.ops.take(x, indices, axis=1) for indices in taps])
        reduce = keras.ops.max if self.kind == "max" else keras.ops.mean
        return reduce(windows, axis=0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "kind": self.kind,
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
        }


def inflate(model: keras.Model, frames: int = CLIP_FRAMES) -> keras.Model:
    """[B, H, W, C] -> [B, D] 2D model -> [B, frames, H, W, C] -> [B, D] inflated model, with
    the 2D model's current weights inflated (see the module doc)."""
    clips = keras.Input((frames, *model.input_shape[1:]), dtype=model.inputs[0].dtype, name="clips")
    walk = _Inflation(frames)
    return keras.Model(clips, walk.run(model, [clips]), name=f"{model.name}_i3d")


class _Inflation:
    """One walk over a 2D graph: maps each 2D layer to its 3D twin (shared layers stay shared)."""

    def __init__(self, frames: int) -> None:
        self.min_frames = frames >> TEMPORAL_STRIDES
        self.twins: dict[int, keras.layers.Layer] = {}

    def run(self, graph: keras.Model, inputs: list):
        # keras.Model's own graph runner (what clone_model uses): it visits the nodes in
        # order and calls operation_fn(layer) on the tensors this walk made so far.
        return graph._run_through_graph(inputs, operation_fn=self._twin_call)

    def _twin_call(self, layer: keras.Operation):
        if isinstance(layer, keras.Model):
            return lambda *args, **kwargs: self.run(layer, list(args))
        if not isinstance(layer, keras.layers.Layer):
            if type(layer).__name__ not in _ELEMENTWISE_OPS:
                raise BackboneError(f"cannot inflate operation {type(layer).__name__}")
            return _ELEMENTWISE_OPS[type(layer).__name__]

        def call(*args, **kwargs):
            twin = self.twins.get(id(layer))
            if twin is not None:
                return twin(*args, **kwargs)
            x = args[0][0] if isinstance(args[0], list | tuple) else args[0]
            twin = self.twins[id(layer)] = self._rebuild(layer, x)
            outputs = twin(*args, **kwargs)
            _transfer(layer, twin)
            return outputs

        return call

    def _rebuild(self, layer: keras.layers.Layer, x) -> keras.layers.Layer:
        """The 3D twin of `layer`, whose input is x [B, T, H, W, C]."""
        config = layer.get_config()
        name = layer.name
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            if not depthwise and layer.groups != 1:
                raise BackboneError(f"cannot inflate {name}: grouped convolution")
            return InflatedConv(
                layer.depth_multiplier if depthwise else layer.filters,
                (self._window(layer.kernel_size, x), *layer.kernel_size),
                (self._stride(layer.strides, x), *layer.strides),
                layer.padding,
                layer.dilation_rate,
                layer.use_bias,
                config["activation"],
                depthwise,
                name=name,
            )
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            return InflatedPool(
                "max" if isinstance(layer, keras.layers.MaxPooling2D) else "avg",
                (self._window(layer.pool_size, x), *layer.pool_size),
                (self._stride(layer.strides, x), *layer.strides),
                layer.padding,
                name=name,
            )
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return keras.layers.GlobalAveragePooling3D(keepdims=layer.keepdims, name=name)
        if isinstance(layer, keras.layers.GlobalMaxPooling2D):
            return keras.layers.GlobalMaxPooling3D(keepdims=layer.keepdims, name=name)
        if isinstance(layer, keras.layers.ZeroPadding2D):
            return keras.layers.ZeroPadding3D(((0, 0), *layer.padding), name=name)
        if isinstance(layer, keras.layers.Reshape) and len(x.shape) == 2:
            # Squeeze-excite's [B, C] -> [B, 1, 1, C] after a global pool: one more 1.
            return keras.layers.Reshape((1, *layer.target_shape), name=name)
        if isinstance(layer, _PER_ELEMENT):
            return type(layer).from_config(_shift_axes(config))
        raise BackboneError(f"cannot inflate layer {name!r} of type {type(layer).__name__}")

    def _window(self, size: tuple[int, int], x) -> int:
        return TEMPORAL_KERNEL if max(size) > 1 and x.shape[1] > 1 else 1

    def _stride(self, strides: tuple[int, int], x) -> int:
        return 2 if max(strides) > 1 and x.shape[1] > self.min_frames else 1


def _shift_axes(config: dict) -> dict:
    """A per-channel layer's config for inputs with a time axis after the batch axis."""
    config = dict(config)
    axis = config.get("axis")
    if isinstance(axis, int) and axis > 0:
        config["axis"] = axis + 1
    elif isinstance(axis, list | tuple):
        config["axis"] = [a + 1 if a > 0 else a for a in axis]
    if config.get("noise_shape") is not None:  # Dropout: [B, 1, 1, C] -> [B, 1, 1, 1, C]
        config["noise_shape"] = (config["noise_shape"][0], 1, *config["noise_shape"][1:])
    return config


def _transfer(layer: keras.layers.Layer, twin: keras.layers.Layer) -> None:
    """The 2D weights into the built twin: kernels repeated over t and divided by t."""
    values = layer.get_weights()
    if isinstance(twin, InflatedConv):
        taps = twin.kernel_size[0]
        values[0] = np.repeat(values[0][None] / np.float32(taps), taps, axis=0)
    twin.set_weights(values)
    if isinstance(twin, keras.layers.Normalization):
        twin.finalize_state()


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one input through `model`'s convolution and dense layers: each
    output position costs its kernel's size (depthwise and inflated kernels included)."""
    total = 0
    for layer in leaf_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            total += math.prod(layer.output.shape[1:-1]) * math.prod(kernel.shape)
    return total


def build_i3d(name: str, weights: str = "random", seed: int = 0) -> keras.Model:
    """uint8 [B, 16, H, W, 3] clips -> float32 [B, D]: backbone `name` inflated.

    `weights`: "imagenet" (the 2D ImageNet file, inflated), "random" (the 2D network's
    seeded He init, inflated: a boring clip still gives the 2D features), or a file: a
    `.weights.h5` this model saved, else a 2D weights file of the backbone, inflated.
    """
    source = backbones.resolve_weights(name, weights, seed, I3D_FLAG)
    if source.kind == "path" and source.path.endswith(".weights.h5"):
        model = inflate(backbones.build_backbone(name, "random", seed))
        try:
            backbones.load_first_fitting(source.path, f"{I3D_FLAG} {weights}", model)
            return model
        except BackboneError as inflated_error:
            try:
                return inflate(backbones.build_backbone(name, weights, seed, I3D_FLAG))
            except BackboneError as frame_error:
                raise BackboneError(
                    f"{frame_error} (nor is it {name}'s inflated model: {inflated_error})"
                ) from None
    return inflate(backbones.build_backbone(name, weights, seed, I3D_FLAG))
