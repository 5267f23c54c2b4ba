"""I3D inflation: a boring clip gives the 2D features, kernels are the 2D ones spread over
time, time shrinks 16 -> 8 -> 4 -> 2, and the cost stays within 8 frames' worth."""

import keras
import numpy as np
import pytest

from features.backbones import (
    BACKBONES,
    BackboneError,
    FramePreprocessing,
    build_backbone,
    leaf_layers,
)
from features.formats import CLIP_FRAMES
from features.inflate import InflatedConv, InflatedPool, build_i3d, inflate, multiply_adds


def random_frames(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random colour frames. # [n, H, W, 3] uint8"""
    grid = np.random.default_rng(seed).uniform(0, 255, (n, 8, 8, 3))
    rows = np.linspace(0, 7, size[0]).round().astype(int)
    cols = np.linspace(0, 7, size[1]).round().astype(int)
    return grid[:, rows][:, :, cols].astype(np.uint8)


def boring(frames: np.ndarray) -> np.ndarray:
    """Each frame repeated CLIP_FRAMES times. # [n, F, H, W, 3] uint8"""
    return np.repeat(frames[:, None], CLIP_FRAMES, axis=1)


@pytest.fixture(scope="module", params=["tiny", "mobilenet_v3_small"])
def pair(request) -> tuple[keras.Model, keras.Model]:
    """A random 2D backbone and its inflation."""
    frame_model = build_backbone(request.param, "random", seed=3)
    return frame_model, inflate(frame_model)


def assert_boring_clip_gives_frame_features(name: str, frame_model, clip_model) -> None:
    frames = random_frames(2, BACKBONES[name].input_size)
    expected = frame_model.predict(frames, verbose=0)
    actual = clip_model.predict(boring(frames), verbose=0)
    assert not np.allclose(expected[0], expected[1], rtol=0.01)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_boring_clip_gives_the_frame_features(pair) -> None:
    frame_model, clip_model = pair
    assert clip_model.input_shape == (None, CLIP_FRAMES, *frame_model.input_shape[1:])
    assert clip_model.inputs[0].dtype == "uint8"
    assert clip_model.output_shape == frame_model.output_shape
    name = frame_model.name.removesuffix("_backbone")
    assert_boring_clip_gives_frame_features(name, frame_model, clip_model)


def test_motion_changes_the_features(pair) -> None:
    frame_model, clip_model = pair
    size = frame_model.input_shape[1:3]
    clip = random_frames(CLIP_FRAMES, size, seed=5)[None]  # 16 different frames
    still = boring(clip[:, CLIP_FRAMES // 2])
    moving, frozen = clip_model.predict(np.concatenate([clip, still]), verbose=0)
    assert not np.allclose(moving, frozen, rtol=0.05, atol=0.05 * np.abs(frozen).max())


def test_kernels_are_the_2d_kernels_spread_over_time(pair) -> None:
    frame_model, clip_model = pair
    frame_layers = {x.name: x for x in leaf_layers(frame_model)}
    inflated = [x for x in leaf_layers(clip_model) if isinstance(x, InflatedConv)]
    assert len(inflated) == sum(hasattr(x, "kernel") for x in frame_layers.values())
    temporal = set()
    for layer in inflated:
        kernel, flat = np.asarray(layer.kernel), np.asarray(frame_layers[layer.name].kernel)
        taps = kernel.shape[0]
        assert kernel.shape == (taps, *flat.shape)
        # 3 frames where the window has spatial extent (and time is left), 1 for 1 x 1.
        frames_in = layer.input.shape[1]
        assert taps == (3 if max(flat.shape[:2]) > 1 and frames_in > 1 else 1)
        for tap in range(taps):
            np.testing.assert_allclose(kernel[tap], flat / taps, rtol=1e-6)
        temporal.add(taps)
    assert temporal == {1, 3} if frame_model.name.startswith("mobilenet") else {3}


def test_time_halves_at_the_first_three_spatial_strides() -> None:
    clip_model = inflate(build_backbone("tiny", "random"))
    convolutions = [x for x in leaf_layers(clip_model) if isinstance(x, InflatedConv)]
    assert [x.output.shape[1] for x in convolutions] == [8, 4, 2, 2]
    assert [x.output.shape[2] for x in convolutions] == [32, 16, 8, 4]


def test_a_boring_clip_stays_boring_at_every_layer(pair) -> None:
    """Edge frames are repeated, not zero-padded: no layer's output varies over time."""
    frame_model, clip_model = pair
    layers = [x for x in leaf_layers(clip_model) if len(x.output.shape) == 5]
    probe = keras.Model(clip_model.inputs, [x.output for x in layers])
    outputs = probe.predict(boring(random_frames(1, frame_model.input_shape[1:3])), verbose=0)
    for layer, output in zip(layers, outputs, strict=True):
        spread = np.abs(output - output[:, :1]).max()
        assert spread <= 1e-5 * (np.abs(output).max() + 1e-12), layer.name


def test_cost_of_a_clip_is_at_most_about_eight_frames(pair) -> None:
    frame_model, clip_model = pair
    ratio = multiply_adds(clip_model) / multiply_adds(frame_model)
    # tiny: 24 + 12 + 6 + 6 frames' worth of four equal-cost layers (its first layer is cheap).
    expected = {"tiny": (8.5, 9.0), "mobilenet_v3_small": (4.0, 6.0)}
    low, high = expected[frame_model.name.removesuffix("_backbone")]
    assert low < ratio < high


def test_random_and_2d_file_weights_are_the_2d_weights_inflated(tmp_path) -> None:
    frame_model = build_backbone("tiny", "random", seed=7)
    frames = random_frames(2, (64, 64))
    expected = frame_model.predict(frames, verbose=0)
    tolerance = {"rtol": 1e-4, "atol": 1e-5 * np.abs(expected).max()}
    seeded = build_i3d("tiny", "random", seed=7)
    np.testing.assert_allclose(seeded.predict(boring(frames), verbose=0), expected, **tolerance)
    path = tmp_path / "tiny_2d.weights.h5"
    frame_model.save_weights(path)
    from_file = build_i3d("tiny", str(path))
    np.testing.assert_allclose(from_file.predict(boring(frames), verbose=0), expected, **tolerance)


def every_layer_kind() -> keras.Model:
    """A small 2D graph with every layer kind the registry's backbones use, weights random.

    uint8 [B, 32, 32, 3] -> [B, 24]: preprocessing, Rescaling, Normalization, ZeroPadding2D,
    strided valid and same convolutions, BatchNorm, max and average pools, Concatenate,
    squeeze-excite (global pool, Reshape, Multiply), Dropout, depthwise, Add, keras.ops.
    """
    layers = keras.layers
    frames = keras.Input((32, 32, 3), dtype="uint8")
    x = FramePreprocessing("caffe")(frames)
    x = layers.Normalization(axis=3)(layers.Rescaling(1 / 255)(x))
    x = layers.Conv2D(8, 3, strides=2)(layers.ZeroPadding2D(((0, 1), (0, 1)))(x))
    x = layers.Activation("relu")(layers.BatchNormalization(axis=3)(x))
    x = layers.MaxPooling2D(3, strides=2)(x)
    pooled = layers.Conv2D(4, (1, 3), padding="same")(layers.AveragePooling2D(3, 1, "same")(x))
    x = layers.Concatenate(axis=3)([layers.Conv2D(8, 1)(x), pooled])
    gate = layers.Reshape((1, 1, 12))(layers.GlobalAveragePooling2D()(x))
    x = layers.Multiply()([x, layers.Conv2D(12, 1, activation="sigmoid")(gate)])
    x = layers.Dropout(0.2, noise_shape=(None, 1, 1, 1))(x)
    y = layers.DepthwiseConv2D(5, strides=2, padding="same", depth_multiplier=2)(x)
    y = layers.ReLU(6.0)(y + 3.0) * (1.0 / 6.0)
    x = layers.Add()([y, layers.Conv2D(24, 1, strides=2)(x)])
    model = keras.Model(frames, layers.GlobalMaxPooling2D()(x), name="every_layer_kind")
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if "float" in str(variable.dtype):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    for layer in model.layers:  # zero-mean kernels: the features depend on the frame
        if hasattr(layer, "kernel"):
            layer.kernel.assign(rng.normal(0, 0.5, layer.kernel.shape).astype("float32"))
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    return model


def test_every_layer_kind_inflates_with_the_boring_property() -> None:
    frame_model = every_layer_kind()
    clip_model = inflate(frame_model)
    frames = random_frames(2, (32, 32))
    expected = frame_model.predict(frames, verbose=0)
    assert not np.allclose(expected[0], expected[1], rtol=0.01)
    actual = clip_model.predict(boring(frames), verbose=0)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    pools = [x for x in clip_model.layers if isinstance(x, InflatedPool)]
    assert [(x.pool_size, x.strides, x.output.shape[1]) for x in pools] == [
        ((3, 3, 3), (2, 2, 2), 4),  # after the first conv's 16 -> 8
        ((3, 3, 3), (1, 1, 1), 4),
    ]
    clip = random_frames(CLIP_FRAMES, (32, 32), seed=1)[None]
    moving, frozen = clip_model.predict(np.concatenate([clip, boring(clip[:, 8])]), verbose=0)
    assert not np.allclose(moving, frozen, rtol=0.05)


def test_unknown_layers_are_refused_by_name() -> None:
    frames = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten(name="flatten_me")(keras.layers.Conv2D(4, 3)(frames))
    with pytest.raises(BackboneError, match="cannot inflate layer 'flatten_me' of type Flatten"):
        inflate(keras.Model(frames, flat))


def test_weights_errors_name_the_i3d_flag(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(BackboneError, match=r"^--i3d_weights imagenet: .* not found"):
        build_i3d("inception_v3", "imagenet")
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(BackboneError, match=r"^--i3d_weights .*garbage.weights.h5: cannot load"):
        build_i3d("tiny", str(garbage))


@pytest.mark.slow  # full-size networks and their inflation (~30 s each on 2 cores)
@pytest.mark.parametrize("name", ["inception_v3", "resnet50", "efficientnet_b0"])
def test_full_size_boring_clip_and_cost(name: str) -> None:
    frame_model = build_backbone(name, "random", seed=1)
    clip_model = inflate(frame_model)
    assert_boring_clip_gives_frame_features(name, frame_model, clip_model)
    assert multiply_adds(clip_model) / multiply_adds(frame_model) < 8.0
