"""Flow backbone: cross-modality first convolution, no-motion preprocessing, weight sources."""

import keras
import numpy as np
import pytest

from features.backbones import BACKBONES, BackboneError, build_backbone, leaf_layers
from features.embedder import FrameEmbedder
from features.flow_backbone import (
    FLOW_CHANNELS,
    FlowPreprocessing,
    build_flow_backbone,
    cross_modality_kernel,
    flow_input_shape,
)
from features.formats import FLOW_PAIRS


def first_kernel(model: keras.Model) -> np.ndarray:
    return next(np.asarray(x.kernel) for x in leaf_layers(model) if hasattr(x, "kernel"))


def grey_frames(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth grey images. # [n, H, W] uint8"""
    grid = np.random.default_rng(seed).uniform(0, 255, (n, 4, 4))
    rows = np.linspace(0, 3, size[0]).round().astype(int)
    cols = np.linspace(0, 3, size[1]).round().astype(int)
    return grid[:, rows][:, :, cols].astype(np.uint8)


def test_input_is_2l_flow_channels() -> None:
    assert FLOW_CHANNELS == 2 * FLOW_PAIRS == 20
    assert flow_input_shape("inception_v3") == (299, 299, 20)
    model = build_flow_backbone("tiny", "random", seed=0)
    assert model.input_shape == (None, 64, 64, 20)
    assert model.inputs[0].dtype == "uint8"
    assert model.output_shape == (None, BACKBONES["tiny"].feature_dims)


def test_cross_modality_kernel_averages_replicates_and_rescales() -> None:
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32)
    adapted = cross_modality_kernel(kernel, (3, 3, 20, 8))
    assert adapted.shape == (3, 3, 20, 8)
    for channel in range(20):
        np.testing.assert_allclose(adapted[:, :, channel], kernel.mean(axis=2) * 3 / 20, rtol=1e-6)
    # What a grey input sees, the sum over input channels, is kept.
    np.testing.assert_allclose(adapted.sum(axis=2), kernel.sum(axis=2), rtol=1e-5, atol=1e-6)
    with pytest.raises(BackboneError, match="cannot adapt"):
        cross_modality_kernel(kernel, (3, 3, 20, 16))


@pytest.mark.parametrize("mode", ["inception", "caffe", "none"])
def test_no_motion_maps_to_the_zero_of_the_input_range(mode: str) -> None:
    flow = np.array([[[[0, 127, 128, 255]]]], np.uint8)
    # 127.5 is no motion: 127 and 128 straddle it symmetrically in every mode.
    values = np.asarray(FlowPreprocessing(mode)(flow))[0, 0, 0]
    if mode == "none":  # the network rescales internally (MobileNetV3: x / 127.5 - 1)
        np.testing.assert_array_equal(values, [0, 127, 128, 255])
    else:
        np.testing.assert_allclose(values[1] + values[2], 0, atol=1e-6)
        np.testing.assert_allclose(values[0] + values[3], 0, atol=1e-6)
        expected_span = 2.0 if mode == "inception" else 255.0
        np.testing.assert_allclose(values[3] - values[0], expected_span, rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v3_small"])
def test_grey_stack_gives_the_rgb_features_of_the_grey_frame(name: str, tmp_path) -> None:
    """The first convolution keeps the sum over input channels (the 2L / 3 rescale): a stack
    whose 2L channels all hold a grey image is that grey frame to the rgb network."""
    rgb = build_backbone(name, "random", seed=2)
    path = tmp_path / f"{name}_rgb.weights.h5"
    rgb.save_weights(path)
    flow = build_flow_backbone(name, str(path))  # an rgb file: adapted
    size = BACKBONES[name].input_size
    grey = grey_frames(3, size)
    expected = rgb.predict(np.repeat(grey[..., None], 3, axis=-1), verbose=0)
    stacks = np.repeat(grey[..., None], FLOW_CHANNELS, axis=-1)
    actual = flow.predict(stacks, verbose=0)
    assert not np.allclose(expected[0], expected[1], rtol=0.01)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # Every layer but the first convolution is the rgb network's.
    for source, target in zip(leaf_layers(rgb), leaf_layers(flow), strict=True):
        for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
            if a.shape == b.shape:
                np.testing.assert_array_equal(a, b)
    # Motion differs from a grey stack: channels no longer all agree.
    moving = stacks.copy()
    moving[..., 0::2] = 255 - moving[..., 0::2]
    assert not np.allclose(flow.predict(moving, verbose=0), actual, rtol=1e-3)


def test_random_init_counts_the_flow_channels_in_fan_in() -> None:
    model = build_flow_backbone("tiny", "random", seed=4)
    kernel = first_kernel(model)
    assert kernel.shape == (3, 3, 20, 32)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (3 * 3 * 20)), rtol=0.05)
    again = build_flow_backbone("tiny", "random", seed=4)
    np.testing.assert_array_equal(first_kernel(again), kernel)
    flow = np.random.default_rng(0).integers(100, 156, (6, 64, 64, 20), dtype=np.uint8)
    features = FrameEmbedder(model, batch_size=4).embed(flow)
    assert features.shape == (6, 256) and features.dtype == np.float32
    assert np.median(features.std(axis=0)) > 1e-3


def test_weights_errors_name_the_flow_flag(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(BackboneError, match=r"^--flow_weights imagenet: .* not found"):
        build_flow_backbone("resnet50", "imagenet")
    with pytest.raises(BackboneError, match=r"^--flow_weights imagenet: backbone 'tiny' has no"):
        build_flow_backbone("tiny", "imagenet")
    other = tmp_path / "mobilenet.weights.h5"
    build_backbone("mobilenet_v3_small", "random").save_weights(other)
    with pytest.raises(BackboneError, match=r"^--flow_weights .*mobilenet.weights.h5: cannot"):
        build_flow_backbone("tiny", str(other))


@pytest.mark.slow  # two EfficientNetB0 builds (~15 s on 2 cores)
def test_efficientnet_normalization_centres_no_motion(tmp_path) -> None:
    rgb = build_backbone("efficientnet_b0", "random", seed=1)
    norm = next(x for x in leaf_layers(rgb) if isinstance(x, keras.layers.Normalization))
    norm.adapt_mean.assign([0.485, 0.456, 0.406])
    norm.adapt_variance.assign([0.05, 0.06, 0.07])
    path = tmp_path / "efficientnet.weights.h5"
    rgb.save_weights(path)
    flow = build_flow_backbone("efficientnet_b0", str(path))
    flow_norm = next(x for x in leaf_layers(flow) if isinstance(x, keras.layers.Normalization))
    np.testing.assert_allclose(np.asarray(flow_norm.adapt_mean), np.full(20, 0.5), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(flow_norm.adapt_variance), np.full(20, 0.06), rtol=1e-6)
