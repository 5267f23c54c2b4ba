"""Backbones and FrameEmbedder: shapes, seeded init, weight files, one trace per embedder."""

import dataclasses
import hashlib

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from features.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    BackboneError,
    WeightsSource,
    build_backbone,
    imagenet_cache_path,
    resolve_weights,
)
from features.embedder import FrameEmbedder

TINY = BACKBONES["tiny"]
APPLICATIONS = {  # backbone -> (keras constructor, its preprocess_input)
    "inception_v3": (keras.applications.InceptionV3, keras.applications.inception_v3),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50),
    "efficientnet_b0": (keras.applications.EfficientNetB0, keras.applications.efficientnet),
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, keras.applications.mobilenet_v3),
}


def smooth_frames(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Distinct natural-ish frames: upsampled random 4x4 colour grids. # [n, H, W, 3] uint8"""
    grid = np.random.default_rng(seed).uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(grid, size), tf.uint8).numpy()


def assert_informative(features: np.ndarray) -> None:
    """Features vary between frames and have not shrunk towards zero."""
    assert np.all(np.isfinite(features))
    spread = features.std(axis=0) / (np.abs(features.mean(axis=0)) + 1e-12)
    assert np.median(spread) > 0.05
    assert np.abs(features).mean() > 1e-2


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    return build_backbone("tiny", "random", seed=0)


def test_registry_default_and_dims() -> None:
    assert DEFAULT_BACKBONE == "inception_v3"
    assert BACKBONES["inception_v3"].input_size == (299, 299)
    assert {name: spec.feature_dims for name, spec in BACKBONES.items()} == {
        "inception_v3": 2048,
        "resnet50": 2048,
        "efficientnet_b0": 1280,
        "mobilenet_v3_small": 576,
        "tiny": 256,
    }


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_built_model_matches_registry(name: str) -> None:
    spec = BACKBONES[name]
    model = build_backbone(name, "random")
    assert model.input_shape == (None, *spec.input_size, 3)
    assert model.inputs[0].dtype == "uint8"
    assert model.output_shape == (None, spec.feature_dims)


def test_same_seed_is_bit_identical_and_seeds_differ(tiny_model: keras.Model) -> None:
    frames = smooth_frames(4, TINY.input_size)
    again = build_backbone("tiny", "random", seed=0)
    other = build_backbone("tiny", "random", seed=1)
    for a, b in zip(tiny_model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tiny_model.predict(frames), again.predict(frames))
    assert not np.allclose(tiny_model.predict(frames), other.predict(frames), atol=1e-3)


def test_tiny_features_are_informative(tiny_model: keras.Model) -> None:
    assert_informative(FrameEmbedder(tiny_model).embed(smooth_frames(32, TINY.input_size)))


@pytest.mark.slow  # a full InceptionV3 (~13 s on 2 cores); the tiny backbone covers the default run
def test_inception_random_features_are_informative() -> None:
    spec = BACKBONES["inception_v3"]
    model = build_backbone("inception_v3", "random", seed=3)
    assert_informative(model.predict(smooth_frames(8, spec.input_size), verbose=0))


@pytest.mark.parametrize("n", [0, 1, 4, 7])
def test_embedder_pads_and_crops_row_for_row(tiny_model: keras.Model, n: int) -> None:
    embedder = FrameEmbedder(tiny_model, batch_size=4)
    frames = smooth_frames(n, TINY.input_size, seed=n)
    features = embedder.embed(frames)
    assert features.shape == (n, TINY.feature_dims)
    assert features.dtype == np.float32
    one_at_a_time = [embedder.embed(frames[i : i + 1]) for i in range(n)]
    expected = np.concatenate(one_at_a_time) if n else np.zeros((0, TINY.feature_dims))
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert embedder.traces == (1 if n else 0)


def test_embedder_traces_once_over_many_sizes(tiny_model: keras.Model) -> None:
    embedder = FrameEmbedder(tiny_model, batch_size=8)
    for n in (1, 8, 11, 0, 30, 3):
        assert embedder.embed(smooth_frames(n, TINY.input_size)).shape == (n, 256)
    assert embedder.traces == 1


@pytest.mark.parametrize(
    "frames",
    [np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 64, 64, 3), np.float32)],
    ids=["wrong-size", "wrong-dtype"],
)
def test_embedder_rejects_frames_it_cannot_embed(tiny_model: keras.Model, frames) -> None:
    with pytest.raises(BackboneError, match=r"expected uint8 \[n, 64, 64, 3\]"):
        FrameEmbedder(tiny_model).embed(frames)


def test_imagenet_missing_from_cache_names_path_and_flag(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = tmp_path / "models" / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert imagenet_cache_path("inception_v3") == str(expected)
    with pytest.raises(BackboneError, match="--weights PATH") as error:
        build_backbone("inception_v3", "imagenet")
    assert str(expected) in str(error.value)


def test_imagenet_cache_file_with_wrong_hash_is_refused(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / BACKBONES["resnet50"].imagenet_file).write_bytes(b"truncated")
    with pytest.raises(BackboneError, match="md5"):
        resolve_weights("resnet50", "imagenet")


def test_tiny_has_no_imagenet_weights() -> None:
    with pytest.raises(BackboneError, match="'tiny' has no ImageNet weights"):
        resolve_weights("tiny", "imagenet")


def test_weights_file_round_trip_and_sha256(tiny_model: keras.Model, tmp_path) -> None:
    path = tmp_path / "tiny.weights.h5"
    tiny_model.save_weights(path)
    source = resolve_weights("tiny", str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert source == WeightsSource("path", path=str(path), sha256=digest)
    assert resolve_weights("tiny", "random", seed=5) == WeightsSource("random", seed=5)
    frames = smooth_frames(3, TINY.input_size)
    loaded = build_backbone("tiny", str(path), seed=9)
    np.testing.assert_array_equal(loaded.predict(frames), tiny_model.predict(frames))


def test_architecture_weights_file_loads_too(tiny_model: keras.Model, tmp_path) -> None:
    path = tmp_path / "architecture.weights.h5"
    tiny_model.layers[-1].save_weights(path)
    frames = smooth_frames(3, TINY.input_size)
    loaded = build_backbone("tiny", str(path), seed=9)
    np.testing.assert_array_equal(loaded.predict(frames), tiny_model.predict(frames))


def test_weights_file_of_another_backbone_is_refused(tiny_model: keras.Model, tmp_path) -> None:
    path = tmp_path / "tiny.weights.h5"
    tiny_model.save_weights(path)
    with pytest.raises(BackboneError, match="tiny.weights.h5: cannot load into"):
        build_backbone("mobilenet_v3_small", str(path))


def write_legacy_notop(model: keras.Model, path: str, seed: int) -> None:
    """Randomise every float weight and save as keras-applications' notop files are laid out.

    Kernels are He-scaled (depthwise by kh*kw) and shifts kept small, so the features still
    depend on the frame and a wrong preprocessing step shows.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        for variable in layer.weights:
            shape, name = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
            if name == "kernel":
                fan_in = np.prod(shape[:-2] if depthwise else shape[:-1])
                values = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif name in ("bias", "beta", "mean", "moving_mean"):
                values = rng.uniform(-0.1, 0.1, shape)
            elif "float" in str(variable.dtype):  # gammas and variances
                values = rng.uniform(0.5, 1.5, shape)
            else:
                continue
            variable.assign(values.astype("float32"))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_legacy_h5_loads_into_tiny(tiny_model: keras.Model, tmp_path) -> None:
    base = build_backbone("tiny", "random", seed=1).layers[-1]
    write_legacy_notop(base, str(tmp_path / "tiny_notop.h5"), seed=2)
    loaded = build_backbone("tiny", str(tmp_path / "tiny_notop.h5"))
    for a, b in zip(base.get_weights(), loaded.layers[-1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("inception_v3", marks=pytest.mark.slow),  # full-size builds: ~15 s each
        pytest.param("resnet50", marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", marks=pytest.mark.slow),
        "mobilenet_v3_small",
    ],
)
def test_imagenet_cache_matches_keras_applications(name, monkeypatch, tmp_path) -> None:
    """A cached notop file gives what keras.applications(weights="imagenet") computes."""
    constructor, module = APPLICATIONS[name]
    spec = BACKBONES[name]
    path = tmp_path / "models" / spec.imagenet_file
    path.parent.mkdir()
    shape = (*spec.input_size, 3)
    reference = constructor(include_top=False, weights=None, pooling="avg", input_shape=shape)
    write_legacy_notop(reference, str(path), seed=4)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setitem(BACKBONES, name, dataclasses.replace(spec, imagenet_md5=md5))
    # keras' own ImageNet build, pointed at our file instead of the network.
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: str(path))
    reference = constructor(include_top=False, weights="imagenet", pooling="avg", input_shape=shape)

    frames = smooth_frames(2, spec.input_size)
    expected = reference.predict(module.preprocess_input(frames.astype("float32")), verbose=0)
    actual = build_backbone(name, "imagenet").predict(frames, verbose=0)
    assert not np.allclose(expected[0], expected[1], rtol=0.01)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_bad_weights_path_is_named(tmp_path) -> None:
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(BackboneError, match=f"--weights {missing}: no such file"):
        build_backbone("tiny", str(missing))
    wrong_kind = tmp_path / "weights.npz"
    wrong_kind.write_bytes(b"")
    with pytest.raises(BackboneError, match="weights.npz: expected a Keras '.weights.h5'"):
        resolve_weights("tiny", str(wrong_kind))
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(BackboneError, match="garbage.weights.h5: cannot load"):
        build_backbone("tiny", str(garbage))


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(BackboneError, match="'vgg16'.*efficientnet_b0, inception_v3"):
        resolve_weights("vgg16", "random")
    with pytest.raises(BackboneError, match="'vgg16'"):
        build_backbone("vgg16")
