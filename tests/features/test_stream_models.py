"""The stream dispatcher: shapes and dims without a build, embedding, our weights format."""

import dataclasses
import hashlib

import numpy as np
import pytest

from features.backbones import BACKBONES, BackboneError, WeightsSource, leaf_layers
from features.embedder import FrameEmbedder
from features.flow_backbone import cross_modality_kernel
from features.stream_models import (
    build_stream_model,
    resolve_stream_weights,
    stream_feature_dims,
    stream_input_shape,
)
from tests.features.test_backbones import write_legacy_notop

STREAMS = [  # (stream, backbone): every picture stream with the smallest network it takes
    ("rgb", "tiny"),
    ("fovea", "tiny"),
    ("flow", "tiny"),
    ("i3d", "tiny"),
    ("c3d", "c3d"),
]


def random_inputs(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_shapes_and_dims_need_no_build() -> None:
    assert stream_input_shape("rgb", "inception_v3") == (299, 299, 3)
    assert stream_input_shape("fovea", "resnet50") == (224, 224, 3)
    assert stream_input_shape("flow", "inception_v3") == (299, 299, 20)
    assert stream_input_shape("i3d", "mobilenet_v3_small") == (16, 224, 224, 3)
    assert stream_input_shape("c3d", "c3d") == (16, 112, 112, 3)
    assert stream_feature_dims("flow", "efficientnet_b0") == 1280
    assert stream_feature_dims("i3d", "inception_v3") == 2048
    assert stream_feature_dims("c3d", "c3d") == 4096


@pytest.mark.parametrize(
    ("stream", "backbone", "message"),
    [
        ("audio", "vggish", "VGGish"),
        ("depth", "tiny", "stream 'depth': choose one of rgb, fovea, flow, i3d, c3d"),
        ("c3d", "tiny", "expected backbone 'c3d'"),
        ("i3d", "c3d", "expected a frame backbone"),
        ("flow", "vgg16", "--backbone 'vgg16': unknown backbone"),
    ],
)
def test_streams_it_does_not_serve_are_refused(stream: str, backbone: str, message: str) -> None:
    for call in (stream_input_shape, stream_feature_dims):
        with pytest.raises(ValueError, match=message):
            call(stream, backbone)
    with pytest.raises(BackboneError, match=message):
        build_stream_model(stream, backbone, "random", 0)


@pytest.mark.parametrize(("stream", "backbone"), STREAMS)
def test_embeds_its_input_and_round_trips_our_weights(stream, backbone, tmp_path) -> None:
    model = build_stream_model(stream, backbone, "random", seed=1)
    shape, dims = stream_input_shape(stream, backbone), stream_feature_dims(stream, backbone)
    assert model.input_shape == (None, *shape) and model.output_shape == (None, dims)
    n = 1 if stream == "c3d" else 3  # a C3D clip is 38.5 G multiply-adds
    inputs = random_inputs(n, shape)
    features = FrameEmbedder(model, batch_size=2).embed(inputs)
    assert features.shape == (n, dims) and features.dtype == np.float32
    assert np.all(np.isfinite(features)) and np.abs(features).max() > 0

    path = tmp_path / f"{stream}.weights.h5"
    model.save_weights(path)
    source = resolve_stream_weights(stream, backbone, str(path), seed=9)
    assert source == WeightsSource(
        "path", path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    rebuilt = build_stream_model(stream, backbone, str(path), seed=9)
    np.testing.assert_array_equal(FrameEmbedder(rebuilt, batch_size=2).embed(inputs), features)


@pytest.mark.parametrize(
    ("stream", "flag"),
    [
        ("rgb", "--weights"),
        ("fovea", "--weights"),
        ("flow", "--flow_weights"),
        ("i3d", "--i3d_weights"),
    ],
)
def test_weights_errors_name_the_streams_flag(stream, flag, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    missing = tmp_path / "missing.weights.h5"
    with pytest.raises(BackboneError, match=f"^{flag} {missing}: no such file"):
        resolve_stream_weights(stream, "tiny", str(missing), 0)
    with pytest.raises(BackboneError, match=f"^{flag} imagenet: .* not found.* pass {flag} PATH"):
        resolve_stream_weights(stream, "resnet50", "imagenet", 0)
    assert resolve_stream_weights(stream, "tiny", "random", 4) == WeightsSource("random", seed=4)
    with pytest.raises(BackboneError, match="^--c3d_weights imagenet"):
        resolve_stream_weights("c3d", "c3d", "imagenet", 0)


def test_imagenet_flow_and_i3d_adapt_the_cached_rgb_file(monkeypatch, tmp_path) -> None:
    """The rgb network's ImageNet file in the Keras cache feeds flow and i3d. tiny is given
    a cache entry here: the code path is every backbone's, at a fraction of the cost."""
    rgb = build_stream_model("rgb", "tiny", "random", seed=5)
    path = tmp_path / "models" / "tiny_notop.h5"
    path.parent.mkdir()
    write_legacy_notop(rgb.layers[-1], str(path), seed=6)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    url = f"https://example.invalid/{path.name}"
    tiny = dataclasses.replace(BACKBONES["tiny"], imagenet_url=url, imagenet_md5=md5)
    monkeypatch.setitem(BACKBONES, "tiny", tiny)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    frame_model = build_stream_model("rgb", "tiny", "imagenet", seed=0)
    frame_kernel = np.asarray(next(x.kernel for x in leaf_layers(frame_model) if x.weights))
    written = next(x.kernel for x in leaf_layers(rgb) if x.weights)  # write_legacy_notop's
    np.testing.assert_array_equal(frame_kernel, np.asarray(written))

    flow = build_stream_model("flow", "tiny", "imagenet", seed=0)
    flow_kernel = np.asarray(next(x.kernel for x in leaf_layers(flow) if x.weights))
    np.testing.assert_allclose(flow_kernel, cross_modality_kernel(frame_kernel, (3, 3, 20, 32)))

    i3d = build_stream_model("i3d", "tiny", "imagenet", seed=0)
    frames = random_inputs(2, (*tiny.input_size, 3))
    expected = frame_model.predict(frames, verbose=0)
    actual = i3d.predict(np.repeat(frames[:, None], 16, axis=1), verbose=0)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
