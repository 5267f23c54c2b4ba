import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from pooling_models import heads, layers
from pooling_models.builder import FLOAT32_LAYERS, build_model, model_inputs
from pooling_models.model_config import (
    CLUSTER_POOLINGS,
    POOLING_CHOICES,
    SINGLE_FRAME,
    ModelConfig,
)

DIMS = 8
AUDIO_DIMS = 4
NUM_CLASSES = 5
LENGTHS = np.array([2, 6, 1, 4], np.int32)
TINY = {
    "num_classes": NUM_CLASSES,
    "feature_sizes": (DIMS,),
    "cluster_size": 4,
    "hidden_size": 8,
    "recurrent_units": 8,
}
AUDIO = {"feature_names": ("rgb", "audio"), "feature_sizes": (DIMS, AUDIO_DIMS)}
FRAME_CONFIGS = {
    **{pooling: ModelConfig(pooling=pooling, **TINY) for pooling in POOLING_CHOICES},
    "tconv": ModelConfig(pooling="conv", conv_variant="tconv", **TINY),
    "logistic_gated": ModelConfig(pooling="mean", head="logistic", gating=True, **TINY),
    **{
        f"{pooling}+audio": ModelConfig(pooling=pooling, **{**TINY, **AUDIO})
        for pooling in ("netvlad", "nextvlad", "lstm", "single_frame", "nonlocal")
    },
    "nonlocal_mean": ModelConfig(pooling="nonlocal", nonlocal_pool="mean", **TINY),
    "netvlad+audio_early": ModelConfig(pooling="netvlad", fusion="early", **{**TINY, **AUDIO}),
}
VIDEO_CONFIGS = {
    "video": ModelConfig(data_level="video", feature_names=("mean_rgb",), **TINY),
    "video+audio": ModelConfig(
        data_level="video",
        head="logistic",
        feature_names=("mean_rgb", "mean_audio"),
        feature_sizes=(DIMS, AUDIO_DIMS),
        num_classes=NUM_CLASSES,
    ),
}
CONFIGS = {**FRAME_CONFIGS, **VIDEO_CONFIGS}


def _inputs(config: ModelConfig, frames: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of len(LENGTHS) videos; frame-level ones padded with zeros to `frames`."""
    rng = np.random.default_rng(seed)
    batch = len(LENGTHS)
    sizes = zip(config.feature_names, config.feature_sizes, strict=True)
    if config.data_level == "video":
        return {name: rng.normal(size=(batch, size)).astype(np.float32) for name, size in sizes}
    inputs = {}
    real = np.arange(frames)[None, :, None] < LENGTHS[:, None, None]
    for name, size in sizes:
        values = rng.normal(size=(batch, frames, size)).astype(np.float32)
        inputs[name] = np.where(real, values, 0.0).astype(np.float32)
    inputs["num_frames"] = LENGTHS
    return inputs


def _garbage_padded(
    inputs: dict[str, np.ndarray], extra: int, garbage: str
) -> dict[str, np.ndarray]:
    """The same videos with every padded frame (old and `extra` new ones) set to garbage:
    "large" finite values, or "nan_inf" (a stray 0 * inf or unmasked sum would show)."""
    rng = np.random.default_rng(1)
    padded = dict(inputs)
    for name, frames in inputs.items():
        if name == "num_frames":
            continue
        batch, steps, size = frames.shape
        longer = np.concatenate([frames, np.zeros((batch, extra, size), np.float32)], axis=1)
        real = np.arange(steps + extra)[None, :, None] < LENGTHS[:, None, None]
        if garbage == "large":
            junk = 1e3 * rng.normal(size=longer.shape)
        else:
            junk = np.where(rng.random(longer.shape) < 0.5, np.nan, np.inf)
        padded[name] = np.where(real, longer, junk).astype(np.float32)
    return padded


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_output_is_probabilities(config: ModelConfig):
    model = build_model(config)
    for training in (False, True):
        probabilities = model(_inputs(config), training=training)
        assert probabilities.shape == (len(LENGTHS), NUM_CLASSES)
        assert probabilities.dtype == "float32"
        assert np.all((probabilities > 0) & (probabilities < 1))


@pytest.mark.parametrize("garbage", ["large", "nan_inf"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("config", FRAME_CONFIGS.values(), ids=FRAME_CONFIGS.keys())
def test_padding_does_not_change_output(config: ModelConfig, training: bool, garbage: str):
    model = build_model(config)
    inputs = _inputs(config)
    expected = model(inputs, training=training)
    padded = model(_garbage_padded(inputs, extra=5, garbage=garbage), training=training)
    np.testing.assert_allclose(padded, expected, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_keras_file_round_trip(config: ModelConfig, tmp_path):
    model = build_model(config)
    model(_inputs(config, seed=2), training=True)  # moves the batch-norm statistics
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = _inputs(config)
    np.testing.assert_array_equal(loaded(inputs), model(inputs))


def test_package_import_registers_every_layer():
    for module in (layers, heads):
        for name in dir(module):
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, keras.layers.Layer):
                registered = keras.saving.get_registered_object(f"framevlad>{name}")
                assert registered is value or name == "MaskedPooling", name


def test_fresh_process_loads_after_import_pooling_models_builder(tmp_path):
    config = FRAME_CONFIGS["netvlad+audio"]
    model = build_model(config)
    inputs = _inputs(config)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "inputs.npz", expected=model(inputs), **inputs)
    script = (
        "import sys, numpy as np, keras, pooling_models.builder\n"
        "model = keras.saving.load_model(sys.argv[1] + '/model.keras')\n"
        "data = dict(np.load(sys.argv[1] + '/inputs.npz'))\n"
        "expected = data.pop('expected')\n"
        "np.testing.assert_array_equal(model(data), expected)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)


def test_frame_model_inputs_are_named_by_feature():
    model = build_model(FRAME_CONFIGS["netvlad+audio"])
    specs = {tensor.name: tensor for tensor in model.inputs}
    assert set(specs) == {"rgb", "audio", "num_frames"}
    assert tuple(specs["rgb"].shape) == (None, None, DIMS)
    assert tuple(specs["audio"].shape) == (None, None, AUDIO_DIMS)
    assert tuple(specs["num_frames"].shape) == (None,)
    assert specs["num_frames"].dtype == "int32"
    assert specs["rgb"].dtype == "float32"


def test_audio_gets_half_the_clusters():
    model = build_model(FRAME_CONFIGS["netvlad+audio"])
    assert model.get_layer("rgb_netvlad").cluster_size == 4
    assert model.get_layer("audio_netvlad").cluster_size == 2


def test_every_stream_but_audio_gets_the_full_cluster_size():
    names = ("rgb", "audio", "flow", "i3d", "c3d", "fovea")
    model = build_model(ModelConfig(feature_names=names, **{**TINY, "feature_sizes": (DIMS,) * 6}))
    clusters = {name: model.get_layer(f"{name}_netvlad").cluster_size for name in names}
    assert clusters == {**dict.fromkeys(names, 4), "audio": 2}
    # Alone, audio is not the small stream beside another: it gets them all. The rule goes
    # by name, not position: rgb second (after flow) keeps its full count.
    alone = build_model(ModelConfig(feature_names=("audio",), **TINY))
    assert alone.get_layer("audio_netvlad").cluster_size == 4
    flow_first = ModelConfig(feature_names=("flow", "rgb"), **{**TINY, "feature_sizes": (6, DIMS)})
    assert {
        layer.cluster_size for layer in build_model(flow_first).layers if "_netvlad" in layer.name
    } == {4}


def test_early_fusion_is_one_pooling_of_the_concatenated_frames():
    """The early-fusion model computes exactly what a one-feature model computes on the
    streams concatenated per frame, with the same weights."""
    early = build_model(FRAME_CONFIGS["netvlad+audio_early"])
    assert {"fused_mask", "fused_norm", "fused_netvlad"} <= {layer.name for layer in early.layers}
    assert early.get_layer("fused_netvlad").cluster_size == 4  # the full count, once
    single = build_model(
        ModelConfig(feature_names=("both",), **{**TINY, "feature_sizes": (DIMS + AUDIO_DIMS,)})
    )
    single.set_weights(early.get_weights())
    inputs = _inputs(FRAME_CONFIGS["netvlad+audio_early"])
    both = np.concatenate([inputs["rgb"], inputs["audio"]], axis=-1)
    expected = single({"both": both, "num_frames": LENGTHS}, training=False)
    np.testing.assert_allclose(early(inputs, training=False), expected, atol=1e-6)
    late = build_model(FRAME_CONFIGS["netvlad+audio"])
    assert {"rgb_netvlad", "audio_netvlad"} <= {layer.name for layer in late.layers}


def test_configs_written_before_fusion_and_nonlocal_read_as_late():
    old = ModelConfig(**AUDIO, num_classes=NUM_CLASSES).to_dict()
    for field in ("fusion", "nonlocal_pool", "nonlocal_bottleneck"):
        del old[field]
    restored = ModelConfig.from_dict(old)
    assert restored.fusion == "late" and not restored.early_fusion
    assert restored.nonlocal_pool == "netvlad" and restored.nonlocal_bottleneck == 0


def test_video_model_takes_one_vector_per_feature():
    model = build_model(VIDEO_CONFIGS["video+audio"])
    specs = {tensor.name: tuple(tensor.shape) for tensor in model.inputs}
    assert specs == {"mean_rgb": (None, DIMS), "mean_audio": (None, AUDIO_DIMS)}


def test_gating_defaults():
    for pooling in POOLING_CHOICES:
        clustered = pooling in CLUSTER_POOLINGS or pooling == "nonlocal"  # nonlocal + NetVLAD
        assert ModelConfig(pooling=pooling).gated == clustered
    assert not ModelConfig(pooling="nonlocal", nonlocal_pool="mean").gated
    assert not ModelConfig(pooling="netvlad", data_level="video").gated
    assert not ModelConfig(pooling="netvlad", gating=False).gated
    assert ModelConfig(pooling="lstm", gating=True).gated
    names = {layer.name for layer in build_model(FRAME_CONFIGS["netvlad"]).layers}
    assert {"gating", "output_gating", "hidden", "hidden_norm", "rgb_norm"} <= names


def test_dataset_with_id_needs_model_inputs():
    config = FRAME_CONFIGS["netvlad"]
    model = build_model(config)
    inputs = _inputs(config)
    batch = {**inputs, "id": np.array([b"a", b"b", b"c", b"d"])}
    labels = np.zeros((len(LENGTHS), NUM_CLASSES), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((batch, labels)).batch(2)

    kept = dataset.map(lambda batch, labels: (model_inputs(model, batch), labels))
    np.testing.assert_allclose(model.predict(kept, verbose=0), model(inputs), atol=1e-6)
    assert set(model_inputs(model, batch)) == {"rgb", "num_frames"}
    # Keras 3 maps a dict with an extra key onto the inputs by position; the contract
    # says callers drop "id", and this documents why.
    with warnings.catch_warnings(), pytest.raises(ValueError):
        warnings.simplefilter("ignore")  # Keras's "structure doesn't match" warning
        model.predict(dataset, verbose=0)
    with pytest.raises(ValueError, match="num_frames"):
        model_inputs(model, {"rgb": inputs["rgb"]})


@pytest.mark.parametrize("name", ["netvlad", "single_frame", "lstm", "dbof", "video"])
def test_mixed_precision_output_is_float32(name: str, mixed_precision):
    config = CONFIGS[name]
    model = build_model(config)
    assert model.output.dtype == "float32"
    for training in (False, True):
        probabilities = model(_inputs(config), training=training)
        assert probabilities.dtype == "float32"
        assert np.all(np.isfinite(probabilities))


@pytest.mark.parametrize("name", ["netvlad+audio", "single_frame", "logistic_gated", "video"])
def test_mixed_precision_computes_the_classifier_and_after_in_float32(name: str, mixed_precision):
    model = build_model(CONFIGS[name])
    float32_layers = [layer for layer in model.layers if layer.name in FLOAT32_LAYERS]
    assert float32_layers and "probabilities" in [layer.name for layer in float32_layers]
    if CONFIGS[name].gated:
        assert "output_gating" in [layer.name for layer in float32_layers]
    for layer in float32_layers:
        for sublayer in [layer, *layer._flatten_layers(include_self=False)]:
            assert sublayer.compute_dtype == "float32", (layer.name, sublayer.name)
    for layer in model.layers:
        if layer.name not in FLOAT32_LAYERS and layer.name.split("_")[0] in ("rgb", "hidden"):
            assert layer.compute_dtype == "float16", layer.name  # the pooling stays fast


def test_pooling_names_match_the_layer_registry():
    assert set(POOLING_CHOICES) == {*layers.POOLING_LAYERS, SINGLE_FRAME}


def test_mixed_precision_fixture_restores_policy():
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(
            pooling="lstm", gating=True, feature_names=("rgb", "audio"), feature_sizes=(1024, 128)
        ),
        VIDEO_CONFIGS["video+audio"],
    ],
)
def test_config_json_round_trip(config: ModelConfig):
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.feature_names, tuple)
    assert isinstance(restored.feature_sizes, tuple)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pooling": "vlad"}, r"pooling='vlad'.*netvlad.*single_frame"),
        ({"head": "svm"}, r"head='svm'.*logistic.*moe"),
        ({"data_level": "clip"}, r"data_level='clip'.*frame.*video"),
        ({"conv_variant": "avg"}, r"conv_variant='avg'.*max.*tconv"),
        ({"feature_names": ("rgb", "audio")}, r"feature_names.*feature_sizes"),
        ({"feature_names": (), "feature_sizes": ()}, r"feature_names"),
        ({"feature_names": ("rgb", "rgb"), "feature_sizes": (8, 8)}, r"repeated"),
        ({"feature_names": ("num_frames",)}, r"num_frames"),
        ({"num_classes": 0}, r"num_classes=0"),
        ({"cluster_size": 0}, r"cluster_size=0"),
        ({"feature_sizes": (0,)}, r"feature_sizes=0"),
        ({"fusion": "middle"}, r"fusion='middle'.*late.*early"),
        ({"nonlocal_pool": "max"}, r"nonlocal_pool='max'.*netvlad.*mean"),
        ({"nonlocal_bottleneck": -1}, r"nonlocal_bottleneck=-1"),
    ],
)
def test_config_rejects_bad_values(values: dict, message: str):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**values)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown fields \['clusters'\]"):
        ModelConfig.from_dict({"clusters": 8})
