"""Builds the video classifier a `ModelConfig` describes: frames -> pooling -> head.

Model contract (training, evaluation and tagging rely on it):

- Frame level. Inputs are a dict of named `keras.Input`s: one per feature name,
  float32 [B, T, D] with T = None (e.g. "rgb" [B, T, 1024], "audio" [B, T, 128]), and
  "num_frames" int32 [B], the real frames per video (the rest is padding and never
  changes the output).
- Video level. One float32 [B, D] input per feature name (e.g. "mean_rgb", "mean_audio").
- Output: class probabilities [B, num_classes] in (0, 1), float32 under any dtype policy.
  Under mixed precision (`mixed_float16`) the pooling and the hidden projection compute in
  float16, and the layers named in `FLOAT32_LAYERS` (the head with its Dense layers, the
  output gating with its own, single_frame's frame average and the final "probabilities"
  cast) compute in float32.
- Only the model's own inputs may be passed. The readers in `pooling_models.data` also
  yield "id" [B] strings; a Keras 3 functional model given a dict with an extra key does
  not ignore it but maps the dict's values onto its inputs by position, and fails
  (`model(...)`, `predict`, `fit` alike). Drop it with `model_inputs(model, batch)`.

Architecture (LOUPE / WILLOW, Miech et al. 2017, for the cluster poolings):

  late fusion (default), per feature:
               mask = FrameMask(frames, num_frames)
               [MaskedBatchNormalization of the frames: the clustered poolings (netvlad,
                netrvlad, netfv, nextvlad, softdbow, nonlocal + netvlad) and dbof]
               pooling layer "<feature>_<pooling>" (cluster poolings: audio beside other
                features gets half the clusters, as WILLOW; rgb, flow, i3d, c3d, fovea
                get cluster_size)
               concatenate the pooled vectors
  early fusion: the features concatenated per frame ("fused" [B, T, sum D]; they are
               aligned, one row per sample), then the steps above once, as feature
               "fused", with cluster_size clusters
  [clustered poolings: Dense(hidden_size, no bias) -> BatchNormalization, no activation]
  [ContextGating, if gated] -> LogisticHead | MoeHead -> [ContextGating, if gated]

The hidden projection is our own mix of WILLOW's two paths. WILLOW's NetVLADModelLF adds a
bias and nothing else when run as its published Gated NetVLAD (`--netvlad_relu=False`:
no batch norm, no ReLU), and batch-normalizes then applies ReLU6 with its code defaults
(`netvlad_relu=True`). Here the projection is batch-normalized (BN's offset standing in
for the bias) and left linear, as WILLOW's best single model is.

The output gating acts on the probabilities, so they stay in (0, 1). DBoF brings its own
hidden projection (with ReLU6, as YouTube-8M's DbofModel). `single_frame` applies the head
to every frame [B, T, D] (features concatenated per frame) and averages the probabilities
over the real frames. At video level `pooling` is ignored: the features are concatenated
and go to the (optionally gated) head.
"""

from collections.abc import Mapping
from typing import Any, TypeVar

import keras

from pooling_models.heads import LogisticHead, MoeHead
from pooling_models.layers import (
    POOLING_LAYERS,
    ContextGating,
    FrameMask,
    MaskedBatchNormalization,
    MeanPooling,
)
from pooling_models.model_config import NUM_FRAMES_KEY, SINGLE_FRAME, ModelConfig

FUSED = "fused"  # the early-fusion frames' name, in its layers' names: fused_netvlad, ...
# Under mixed precision these layers, and the sublayers they build, compute in float32:
# everything from the classifier's Dense layers to the output. Probabilities near 0 or 1
# round to exactly 0 or 1 in float16 (log loss infinite), and the output gating multiplies
# probabilities by gates that float16 would quantize coarsely.
FLOAT32_LAYERS: tuple[str, ...] = ("head", "output_gating", "frame_average", "probabilities")

Value = TypeVar("Value")


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
        video = _concatenate(_pooled_features(config, inputs), "pooled")
        if config.clustered:
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


def _pooled_features(
    config: ModelConfig, inputs: dict[str, keras.KerasTensor]
) -> list[keras.KerasTensor]:
    """One pooled vector per feature (late fusion), or one of all features (early)."""
    num_frames = inputs[NUM_FRAMES_KEY]
    if config.early_fusion:
        frames = _concatenate([inputs[name] for name in config.feature_names], FUSED)
        return [_pool(config, FUSED, frames, num_frames, config.cluster_size)]
    return [
        _pool(config, name, inputs[name], num_frames, config.cluster_size_for(name))
        for name in config.feature_names
    ]


def _pool(
    config: ModelConfig,
    name: str,
    frames: keras.KerasTensor,
    num_frames: keras.KerasTensor,
    cluster_size: int,
) -> keras.KerasTensor:
    """One feature's frames [B, T, D] -> its pooled vector [B, P]."""
    mask = FrameMask(name=f"{name}_mask")(frames, num_frames)
    # LOUPE and YouTube-8M's DBoF batch-normalize the frames they cluster.
    if config.clustered or config.pooling == "dbof":
        frames = MaskedBatchNormalization(name=f"{name}_norm")(frames, mask=mask)
    layer_class = POOLING_LAYERS[config.pooling]
    layer = layer_class(**_pooling_args(config, cluster_size), name=f"{name}_{config.pooling}")
    return layer(frames, mask=mask)


def _pooling_args(config: ModelConfig, cluster_size: int) -> dict[str, Any]:
    """Constructor arguments of the `config.pooling` layer."""
    if config.pooling == "nonlocal":
        return {
            "cluster_size": cluster_size,
            "pooling": config.nonlocal_pool,
            "bottleneck_size": config.nonlocal_bottleneck,
        }
    if config.clustered:
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

    ContextGating builds its Dense and BatchNormalization with its own dtype policy, so
    declaring it float32 makes the whole gating float32 (see FLOAT32_LAYERS).
    """
    if config.gated:
        probabilities = ContextGating(dtype="float32", name="output_gating")(probabilities)
    return keras.layers.Activation("linear", dtype="float32", name="probabilities")(probabilities)


def _head(config: ModelConfig) -> keras.layers.Layer:
    """The classifier, float32 under any policy: the heads build their Dense layers with
    their own dtype policy, so the logits, sigmoids and mixtures all compute in float32."""
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
