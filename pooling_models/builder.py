"""Builds the video classifier a `ModelConfig` describes: frames -> pooling -> head.

Model contract (training, evaluation and tagging rely on it):

- Frame level. Inputs are a dict of named `keras.Input`s: one per feature name,
  float32 [B, T, D] with T = None (e.g. "rgb" [B, T, 1024], "audio" [B, T, 128]), and
  "num_frames" int32 [B], the real frames per video (the rest is padding and never
  changes the output).
- Video level. One float32 [B, D] input per feature name (e.g. "mean_rgb", "mean_audio").
- Output: class probabilities [B, num_classes] in (0, 1), float32 under any dtype policy
  (a final float32 cast named "probabilities"; the head is declared float32 too).
- Only the model's own inputs may be passed. The readers in `pooling_models.data` also
  yield "id" [B] strings; a Keras 3 functional model given a dict with an extra key does
  not ignore it but maps the dict's values onto its inputs by position, and fails
  (`model(...)`, `predict`, `fit` alike). Drop it with `model_inputs(model, batch)`.

Architecture (LOUPE / WILLOW, Miech et al. 2017, for the cluster poolings):

  per feature: mask = FrameMask(frames, num_frames)
               [MaskedBatchNormalization of the frames: netvlad, netrvlad, netfv,
                nextvlad, softdbow, dbof]
               pooling layer (cluster poolings: the second and later features, i.e.
                audio, get half the clusters, as WILLOW)
  concatenate the pooled vectors
  [Dense(hidden_size, no bias) + BatchNormalization, no ReLU as WILLOW: cluster poolings]
  [ContextGating, if gated] -> LogisticHead | MoeHead -> [ContextGating, if gated]

The output gating acts on the probabilities, so they stay in (0, 1). DBoF brings its own
hidden projection (with ReLU6, as YouTube-8M's DbofModel). `single_frame` applies the head
to every frame [B, T, D] (features concatenated per frame) and averages the probabilities
over the real frames. At video level `pooling` is ignored: the features are concatenated
and go to the (optionally gated) head.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import keras

from pooling_models.data import NUM_FRAMES_KEY
from pooling_models.heads import LogisticHead, MoeHead
from pooling_models.layers import (
    POOLING_LAYERS,
    ContextGating,
    FrameMask,
    MaskedBatchNormalization,
    MeanPooling,
)

SINGLE_FRAME = "single_frame"
POOLING_CHOICES: tuple[str, ...] = (*POOLING_LAYERS, SINGLE_FRAME)
HEAD_CHOICES: tuple[str, ...] = ("logistic", "moe")
DATA_LEVELS: tuple[str, ...] = ("frame", "video")
CONV_VARIANTS: tuple[str, ...] = ("max", "tconv")

# Poolings that aggregate soft cluster assignments: LOUPE/WILLOW project their (wide)
# output to hidden_size and gate it, so gating is their default.
CLUSTER_POOLINGS: tuple[str, ...] = ("netvlad", "netrvlad", "netfv", "nextvlad", "softdbow")
# Poolings whose reference models batch-normalize the input frames (LOUPE, YouTube-8M DBoF).
_NORMALIZED_FRAMES = (*CLUSTER_POOLINGS, "dbof")
_RESERVED_NAMES = (NUM_FRAMES_KEY, "id")
_POSITIVE_FIELDS = (
    "num_classes",
    "cluster_size",
    "hidden_size",
    "num_mixtures",
    "recurrent_layers",
    "recurrent_units",
)

Value = TypeVar("Value")


@dataclass(frozen=True)
class ModelConfig:
    """What `build_model` builds; JSON-able with `to_dict` / `from_dict`.

    pooling: a `POOLING_CHOICES` name (ignored when data_level is "video").
    feature_names / feature_sizes: the model's inputs and their widths D, in order; the
      first one sets the cluster count, later ones (audio) get half of it.
    gating: None = on for the `CLUSTER_POOLINGS` at frame level, off otherwise.
    hidden_size: the cluster poolings' projection, DBoF's hidden layer and conv's width.
    l2_penalty: L2 weight of the head's kernels.
    """

    pooling: str = "netvlad"
    num_classes: int = 3862
    feature_names: tuple[str, ...] = ("rgb",)
    feature_sizes: tuple[int, ...] = (1024,)
    data_level: str = "frame"
    cluster_size: int = 64
    hidden_size: int = 1024
    gating: bool | None = None
    head: str = "moe"
    num_mixtures: int = 2
    conv_variant: str = "max"
    recurrent_layers: int = 2
    recurrent_units: int = 1024
    l2_penalty: float = 1e-6

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; keep the config hashable and equal to its original.
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "feature_sizes", tuple(int(size) for size in self.feature_sizes))
        _check_choice("pooling", self.pooling, POOLING_CHOICES)
        _check_choice("head", self.head, HEAD_CHOICES)
        _check_choice("data_level", self.data_level, DATA_LEVELS)
        _check_choice("conv_variant", self.conv_variant, CONV_VARIANTS)
        if not self.feature_names or len(self.feature_names) != len(self.feature_sizes):
            raise ValueError(
                f"ModelConfig.feature_names={self.feature_names} and feature_sizes="
                f"{self.feature_sizes}: need one size per name, and at least one"
            )
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError(f"ModelConfig.feature_names={self.feature_names}: repeated name")
        for name in self.feature_names:
            if name in _RESERVED_NAMES:
                raise ValueError(f"ModelConfig.feature_names: {name!r} is not a feature")
        for field in _POSITIVE_FIELDS:
            _check_positive(field, getattr(self, field))
        for size in self.feature_sizes:
            _check_positive("feature_sizes", size)
        if self.l2_penalty < 0:
            raise ValueError(f"ModelConfig.l2_penalty={self.l2_penalty}: must be >= 0")

    @property
    def gated(self) -> bool:
        """Whether Context Gating is used, with `gating=None` resolved."""
        if self.gating is not None:
            return self.gating
        return self.data_level == "frame" and self.pooling in CLUSTER_POOLINGS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for json.dump (tuples become lists there; from_dict restores them)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of to_dict; missing fields take their defaults, unknown ones are errors."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"ModelConfig: unknown fields {unknown}; expected some of {sorted(known)}"
            )
        return cls(**values)


def build_model(config: ModelConfig) -> keras.Model:
    """The uncompiled classifier for `config`; see the module docstring for its contract."""
    if config.data_level == "video":
        inputs = {
            name: keras.Input((size,), dtype="float32", name=name)
            for name, size in zip(config.feature_names, config.feature_sizes, strict=True)
        }
        outputs = _classify(config, _concatenate(list(inputs.values()), "features"))
        return keras.Model(inputs, outputs, name=f"video_{config.head}")

    inputs = {
        name: keras.Input((None, size), dtype="float32", name=name)
        for name, size in zip(config.feature_names, config.feature_sizes, strict=True)
    }
    inputs[NUM_FRAMES_KEY] = keras.Input((), dtype="int32", name=NUM_FRAMES_KEY)
    if config.pooling == SINGLE_FRAME:
        outputs = _single_frame(config, inputs)
    else:
        pooled = [
            _pool(config, name, inputs[name], inputs[NUM_FRAMES_KEY], index)
            for index, name in enumerate(config.feature_names)
        ]
        video = _concatenate(pooled, "pooled")
        if config.pooling in CLUSTER_POOLINGS:
            video = keras.layers.Dense(config.hidden_size, use_bias=False, name="hidden")(video)
            video = keras.layers.BatchNormalization(name="hidden_norm")(video)
        outputs = _classify(config, video)
    return keras.Model(inputs, outputs, name=config.pooling)


def model_inputs(model: keras.Model, batch: Mapping[str, Value]) -> dict[str, Value]:
    """The entries of `batch` that `model` takes, e.g. without the readers' "id" strings.

    Works on tensors inside `tf.data.Dataset.map` as well as on numpy arrays:
    `dataset.map(lambda inputs, labels: (model_inputs(model, inputs), labels))`.
    """
    names = [tensor.name for tensor in model.inputs]
    missing = [name for name in names if name not in batch]
    if missing:
        raise ValueError(f"model {model.name!r} needs inputs {missing}; got {sorted(batch)}")
    return {name: batch[name] for name in names}


def _pool(
    config: ModelConfig,
    name: str,
    frames: keras.KerasTensor,
    num_frames: keras.KerasTensor,
    index: int,
) -> keras.KerasTensor:
    """One feature's frames [B, T, D] -> its pooled vector [B, P]."""
    mask = FrameMask(name=f"{name}_mask")(frames, num_frames)
    if config.pooling in _NORMALIZED_FRAMES:
        frames = MaskedBatchNormalization(name=f"{name}_norm")(frames, mask=mask)
    # WILLOW gives audio (the second feature) half of rgb's clusters.
    cluster_size = config.cluster_size if index == 0 else max(1, config.cluster_size // 2)
    layer_class = POOLING_LAYERS[config.pooling]
    layer = layer_class(**_pooling_args(config, cluster_size), name=f"{name}_{config.pooling}")
    return layer(frames, mask=mask)


def _pooling_args(config: ModelConfig, cluster_size: int) -> dict[str, Any]:
    """Constructor arguments of the `config.pooling` layer."""
    if config.pooling in CLUSTER_POOLINGS:
        return {"cluster_size": cluster_size}
    if config.pooling == "dbof":
        return {"cluster_size": cluster_size, "hidden_size": config.hidden_size}
    if config.pooling == "conv":
        return {"hidden_size": config.hidden_size, "variant": config.conv_variant}
    if config.pooling in ("lstm", "gru"):
        return {"units": config.recurrent_units, "num_layers": config.recurrent_layers}
    return {}


def _single_frame(config: ModelConfig, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Head on every frame, probabilities averaged over the real frames -> [B, C]."""
    first = inputs[config.feature_names[0]]
    mask = FrameMask(name="frame_mask")(first, inputs[NUM_FRAMES_KEY])
    frames = _concatenate([inputs[name] for name in config.feature_names], "frames")
    per_frame = _head(config)(frames)  # [B, T, C]
    probabilities = MeanPooling(dtype="float32", name="frame_average")(per_frame, mask=mask)
    return _gate_output(config, probabilities)


def _classify(config: ModelConfig, video: keras.KerasTensor) -> keras.KerasTensor:
    """[B, F] video vector -> [B, C] float32 probabilities, gated before and after if asked."""
    if config.gated:
        video = ContextGating(name="gating")(video)
    return _gate_output(config, _head(config)(video))


def _gate_output(config: ModelConfig, probabilities: keras.KerasTensor) -> keras.KerasTensor:
    """Output gating if asked, then a cast that makes the output float32 under any policy.

    The gating runs in the global policy: ContextGating builds its Dense and BatchNorm in
    the global policy whatever its own dtype, so forcing it to float32 under mixed_float16
    would multiply float16 gates by float32 inputs.
    """
    if config.gated:
        probabilities = ContextGating(name="output_gating")(probabilities)
    return keras.layers.Activation("linear", dtype="float32", name="probabilities")(probabilities)


def _head(config: ModelConfig) -> keras.layers.Layer:
    # float32 even under mixed precision, as probabilities near 0 or 1 round to exactly 0 or
    # 1 in float16. (The heads build their Dense layers in the global policy, so under
    # mixed_float16 those still compute in float16 until the heads pass their dtype on.)
    if config.head == "logistic":
        return LogisticHead(
            config.num_classes, l2_penalty=config.l2_penalty, dtype="float32", name="head"
        )
    return MoeHead(
        config.num_classes,
        num_mixtures=config.num_mixtures,
        l2_penalty=config.l2_penalty,
        dtype="float32",
        name="head",
    )


def _concatenate(tensors: list[keras.KerasTensor], name: str) -> keras.KerasTensor:
    if len(tensors) == 1:
        return tensors[0]
    return keras.layers.Concatenate(axis=-1, name=name)(tensors)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"ModelConfig.{field}={value!r}: expected one of {choices}")


def _check_positive(field: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"ModelConfig.{field}={value}: must be at least 1")
