"""Mixed precision, XLA and batch sizing of the CNN: mixed features quantize within one level
of float32's, the copy keeps float32 at its edges, and auto batches fit the GPU."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from features import precision
from features.backbones import BackboneError, FramePreprocessing, build_backbone, leaf_layers
from features.embedder import FrameEmbedder
from features.inflate import InflatedConv
from features.pca import fit_pca
from features.precision import (
    CPU_FRAMES_PER_BATCH,
    MAX_AUTO_FRAMES_PER_BATCH,
    auto_frames_per_batch,
    check_precision,
    resolve_jit_compile,
    with_precision,
)
from features.quantize import quantize
from features.stream_models import build_stream_model, stream_input_shape
from features.vggish import AudioEmbedder, build_vggish

INCEPTION_FRAME = (299, 299, 3)


def textured(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Distinct samples with detail at every scale (4, 16 and 64 cells across), so that a
    network's features vary between them as between real frames. # [n, *shape] uint8"""
    rng = np.random.default_rng(seed)
    *lead, height, width, channels = shape
    count = n * int(np.prod(lead, dtype=np.int64))
    field = np.zeros((count, height, width, channels), np.float32)
    for cells in (4, 16, 64):
        grid = rng.uniform(-1, 1, (count, cells, cells, channels)).astype(np.float32)
        field += tf.image.resize(grid, (height, width)).numpy() * np.sqrt(64 / cells)
    field = 127.5 + 60 * field / field.std()
    return np.clip(field, 0, 255).astype(np.uint8).reshape(n, *shape)


def bytes_within_one_level(reference: np.ndarray, features: np.ndarray) -> float:
    """Share of quantized bytes of `features` within +-1 of `reference`'s: PCA to half the
    dims fitted on the first half of `reference`, applied to the second half of both."""
    half = len(reference) // 2
    pca = fit_pca(reference[:half], dims=min(reference.shape[1] // 2, half // 2))
    expected = quantize(pca.apply(reference[half:])).astype(np.int16)
    got = quantize(pca.apply(features[half:])).astype(np.int16)
    return float((np.abs(expected - got) <= 1).mean())


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    return build_backbone("tiny", "random", seed=0)


@pytest.fixture
def no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(precision, "gpus", lambda: [])


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU of a given compute capability, as TensorFlow would describe it."""

    def install(capability: tuple[int, int], name: str = "Fake GPU") -> None:
        device = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
        details = {"compute_capability": capability, "device_name": name}
        monkeypatch.setattr(precision, "gpus", lambda: [device])
        monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda _: details)

    return install


def test_tiny_mixed_features_quantize_within_one_level(tiny_model: keras.Model) -> None:
    frames = textured(384, stream_input_shape("rgb", "tiny"))
    reference = FrameEmbedder(tiny_model, 64).embed(frames)
    mixed = FrameEmbedder(tiny_model, 64, precision="mixed").embed(frames)
    assert mixed.dtype == np.float32
    assert np.abs(mixed - reference).max() > 0  # float16 did run
    assert bytes_within_one_level(reference, mixed) >= 0.99


def test_bfloat16_would_not_quantize_within_one_level(tiny_model: keras.Model) -> None:
    """Why mixed is float16: bfloat16's 8-bit mantissa moves many bytes by two levels."""
    frames = textured(384, stream_input_shape("rgb", "tiny"))
    reference = FrameEmbedder(tiny_model, 64).embed(frames)
    policy = keras.DTypePolicy("mixed_bfloat16")

    def clone(layer):
        config = layer.get_config()
        if precision.runs_on_tensor_cores(layer):
            config["dtype"] = keras.dtype_policies.serialize(policy)
        return layer.__class__.from_config(config)

    bfloat16 = keras.models.clone_model(tiny_model, clone_function=clone, recursive=True)
    bfloat16.set_weights(tiny_model.get_weights())
    assert bytes_within_one_level(reference, FrameEmbedder(bfloat16, 64).embed(frames)) < 0.95


@pytest.mark.slow
def test_mobilenet_mixed_features_quantize_within_one_level() -> None:
    model = build_backbone("mobilenet_v3_small", "random", seed=0)
    frames = textured(384, stream_input_shape("rgb", "mobilenet_v3_small"))
    reference = FrameEmbedder(model, 32).embed(frames)
    mixed = FrameEmbedder(model, 32, precision="mixed").embed(frames)
    assert bytes_within_one_level(reference, mixed) >= 0.99


@pytest.mark.parametrize("stream", ["flow", "i3d"])
def test_motion_streams_mixed_features_quantize_within_one_level(stream: str) -> None:
    model = build_stream_model(stream, "tiny", "random", seed=0)
    samples = textured(96, stream_input_shape(stream, "tiny"), seed=1)
    reference = FrameEmbedder(model, 16).embed(samples)
    mixed = FrameEmbedder(model, 16, precision="mixed").embed(samples)
    assert np.abs(mixed - reference).max() > 0
    assert bytes_within_one_level(reference, mixed) >= 0.99


def test_vggish_mixed_embeddings_stay_within_a_thousandth() -> None:
    model = build_vggish("random", seed=0)
    examples = np.random.default_rng(0).normal(size=(8, 96, 64)).astype(np.float32)
    reference = AudioEmbedder(model, 8).embed(examples)
    mixed = AudioEmbedder(model, 8, precision="mixed").embed(examples)
    relative = np.abs(mixed - reference).mean() / np.abs(reference).mean()
    assert 0 < relative < 1e-3


def test_mixed_copy_keeps_weights_and_float32_at_its_edges(tiny_model: keras.Model) -> None:
    assert with_precision(tiny_model, "float32") is tiny_model
    mixed = with_precision(tiny_model, "mixed")
    for expected, got in zip(tiny_model.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(expected, got)
    assert all(variable.dtype == "float32" for variable in mixed.weights)
    compute = {type(layer).__name__: layer.compute_dtype for layer in leaf_layers(mixed)}
    assert compute == {
        "InputLayer": "float32",
        "FramePreprocessing": "float32",
        "Conv2D": "float16",
        "GlobalAveragePooling2D": "float32",
    }
    frames = textured(2, stream_input_shape("rgb", "tiny"))
    assert mixed(frames).dtype == "float32"  # pooled in float32


def test_only_channel_mixing_kernels_run_in_float16() -> None:
    def built(layer: keras.layers.Layer, shape: tuple[int, ...]) -> keras.layers.Layer:
        layer.build(shape)
        return layer

    assert precision.runs_on_tensor_cores(built(keras.layers.Conv2D(4, 3), (1, 8, 8, 2)))
    assert precision.runs_on_tensor_cores(built(keras.layers.Dense(4), (1, 2)))
    assert precision.runs_on_tensor_cores(built(keras.layers.Conv3D(4, 3), (1, 4, 8, 8, 2)))
    inflated = InflatedConv(4, (3, 3, 3), (1, 1, 1), "same")
    assert precision.runs_on_tensor_cores(built(inflated, (1, 4, 8, 8, 2)))
    depthwise = InflatedConv(1, (3, 3, 3), (1, 1, 1), "same", depthwise=True)
    assert not precision.runs_on_tensor_cores(built(depthwise, (1, 4, 8, 8, 2)))
    assert not precision.runs_on_tensor_cores(built(keras.layers.DepthwiseConv2D(3), (1, 8, 8, 2)))
    assert not precision.runs_on_tensor_cores(
        built(keras.layers.BatchNormalization(), (1, 8, 8, 2))
    )
    assert not precision.runs_on_tensor_cores(keras.layers.ReLU())


def test_mixed_overflow_fails_the_batch_naming_the_fix() -> None:
    """float16 tops out at 65504: a sum of 48 values of 255 x 1000 is inf there."""
    frames = keras.Input((4, 4, 3), dtype="uint8")
    x = keras.layers.Flatten()(FramePreprocessing("none")(frames))
    big = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(1000.0))(x)
    model = keras.Model(frames, big)
    white = np.full((3, 4, 4, 3), 255, np.uint8)
    assert np.isfinite(FrameEmbedder(model, 2).embed(white)).all()
    with pytest.raises(BackboneError, match=r"3 of 3 samples.*--precision float32"):
        FrameEmbedder(model, 2, precision="mixed").embed(white)


def test_xla_features_equal_the_graph_ones_and_trace_once(tiny_model: keras.Model) -> None:
    frames = textured(10, stream_input_shape("rgb", "tiny"))
    compiled = FrameEmbedder(tiny_model, 4, jit_compile=True)
    assert compiled.jit_compile
    features = compiled.embed(frames)
    np.testing.assert_allclose(features, FrameEmbedder(tiny_model, 4).embed(frames), atol=1e-4)
    assert compiled.traces == 1


def test_jit_auto_is_on_with_a_gpu_only(no_gpu, fake_gpu) -> None:
    assert resolve_jit_compile(None) is False
    assert resolve_jit_compile(True) is True
    fake_gpu((8, 0))
    assert resolve_jit_compile(None) is True
    assert resolve_jit_compile(False) is False


def test_precision_choices_are_checked_in_one_line(no_gpu, fake_gpu) -> None:
    with pytest.raises(BackboneError, match=r"^--precision 'half': choose one of float32, mixed$"):
        check_precision("half")
    check_precision("mixed")  # a CPU runs float16 arithmetic
    fake_gpu((6, 1), "Tesla P4")
    with pytest.raises(BackboneError, match=r"Tesla P4 \(compute capability 6\.1\).*float32$"):
        check_precision("mixed")
    check_precision("float32")
    fake_gpu((8, 9), "NVIDIA L4")
    check_precision("mixed")


def test_auto_frames_per_batch_on_cpu_is_the_default(no_gpu) -> None:
    assert auto_frames_per_batch(INCEPTION_FRAME) == CPU_FRAMES_PER_BATCH == 32


def test_auto_frames_per_batch_fits_gpu_memory_in_powers_of_two(no_gpu) -> None:
    gib = 1 << 30
    # 299 x 299 x 3 x 16 values x 4 bytes = 17.2 MB a frame; half of 2 GiB holds 62 of them.
    assert auto_frames_per_batch(INCEPTION_FRAME, gpu_free_bytes=2 * gib) == 32
    assert auto_frames_per_batch(INCEPTION_FRAME, gpu_free_bytes=4 * gib) == 64
    assert auto_frames_per_batch((64, 64, 3), gpu_free_bytes=2 * gib) == 256  # capped
    assert auto_frames_per_batch(INCEPTION_FRAME, gpu_free_bytes=80 * gib) == (
        MAX_AUTO_FRAMES_PER_BATCH
    )
    assert auto_frames_per_batch(INCEPTION_FRAME, gpu_free_bytes=80 * gib, max_frames=1024) == 1024
    with pytest.raises(BackboneError, match=r"frames_per_batch auto: one \[299, 299, 3\] sample"):
        auto_frames_per_batch(INCEPTION_FRAME, gpu_free_bytes=16 << 20)


def test_auto_frames_per_batch_reads_the_free_memory_of_a_present_gpu(
    fake_gpu, monkeypatch
) -> None:
    fake_gpu((8, 0))
    monkeypatch.setattr(precision, "free_gpu_memory", lambda: 1 << 30)
    assert auto_frames_per_batch(INCEPTION_FRAME) == 16  # 512 MiB / 17.2 MB = 31 -> 16
    monkeypatch.setattr(precision, "free_gpu_memory", lambda: None)
    assert auto_frames_per_batch(INCEPTION_FRAME) == MAX_AUTO_FRAMES_PER_BATCH  # as a 15 GiB T4
