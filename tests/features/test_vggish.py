import numpy as np
import pytest
import tensorflow as tf

from features.audio import decode_audio, examples_at, log_mel_spectrogram
from features.backbones import BackboneError
from features.pca import PcaTransform
from features.quantize import quantize
from features.vggish import (
    EMBEDDING_DIMS,
    AudioEmbedder,
    build_vggish,
    checkpoint_scope,
    resolve_vggish_weights,
    vggish_cache_path,
)
from features.vggish_convert import ConversionError, convert, main, read_checkpoint
from features.vggish_pca import is_vggish_pca_file, load_vggish_pca
from tests.audio_media import noise, tone, write_media

# The published checkpoint's variables (vggish_slim.py under TF-Slim's naming), written here
# from the published definition rather than from our layer table.
PUBLISHED_SHAPES = {
    "vggish/conv1": (3, 3, 1, 64),
    "vggish/conv2": (3, 3, 64, 128),
    "vggish/conv3/conv3_1": (3, 3, 128, 256),
    "vggish/conv3/conv3_2": (3, 3, 256, 256),
    "vggish/conv4/conv4_1": (3, 3, 256, 512),
    "vggish/conv4/conv4_2": (3, 3, 512, 512),
    "vggish/fc1/fc1_1": (6 * 4 * 512, 4096),
    "vggish/fc1/fc1_2": (4096, 4096),
    "vggish/fc2": (4096, 128),
}


@pytest.fixture(scope="module")
def embedder() -> AudioEmbedder:
    return AudioEmbedder(build_vggish("random", seed=0), batch_size=4)


def test_architecture_is_the_published_vggish(embedder):
    model = embedder.model
    assert model.input_shape == (None, 96, 64)
    assert model.output_shape == (None, EMBEDDING_DIMS)
    assert model.count_params() == 72_141_184  # VGGish's published size
    for scope, shape in PUBLISHED_SHAPES.items():
        layer = model.get_layer(scope.rsplit("/", 1)[-1])
        assert checkpoint_scope(layer.name) == scope
        assert tuple(layer.kernel.shape) == shape
    assert model.get_layer("fc2").activation.__name__ == "linear"  # pre-activation embedding


def test_random_weights_are_seeded(embedder):
    examples = np.random.default_rng(1).normal(size=(2, 96, 64)).astype(np.float32)
    again = build_vggish("random", seed=0)
    np.testing.assert_array_equal(again(examples).numpy(), embedder.model(examples).numpy())
    # He init keeps the signal alive through 11 layers: embeddings neither vanish nor blow up.
    scale = float(np.abs(again(examples).numpy()).mean())
    assert 0.01 < scale < 1000


def test_embedder_pads_batches_and_traces_once(embedder):
    examples = np.random.default_rng(0).normal(size=(6, 96, 64)).astype(np.float32)
    embeddings = embedder.embed(examples)
    assert embeddings.shape == (6, EMBEDDING_DIMS) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings[:2], embedder.model(examples[:2]).numpy(), atol=1e-4)
    assert embedder.embed(examples[:1]).shape == (1, EMBEDDING_DIMS)
    assert embedder.embed(examples[:0]).shape == (0, EMBEDDING_DIMS)
    assert embedder.traces == 1
    with pytest.raises(BackboneError, match=r"expected float \[n, 96, 64\]"):
        embedder.embed(examples[:, :48])


def _embedding(embedder: AudioEmbedder, path: str) -> np.ndarray:
    decoded = decode_audio(path)
    examples = examples_at(log_mel_spectrogram(decoded.samples), np.arange(3.0))
    return embedder.embed(examples).mean(axis=0)


def test_one_tone_at_two_rates_embeds_closer_than_tone_and_noise(tmp_path, embedder):
    paths = {}
    for name, signal, rate in [
        ("tone48k", tone(440.0, 3.0, 48_000, amplitude=0.3), 48_000),
        ("tone44k", tone(440.0, 3.0, 44_100, amplitude=0.3), 44_100),
        ("noise48k", noise(3.0, 48_000), 48_000),
    ]:
        paths[name] = str(tmp_path / f"{name}.m4a")
        write_media(paths[name], audio=signal, rate=rate, layout="stereo")
    tone48, tone44, noise48 = (_embedding(embedder, paths[name]) for name in paths)
    same_sound = np.linalg.norm(tone48 - tone44)
    different_sound = np.linalg.norm(tone48 - noise48)
    assert same_sound < 0.2 * different_sound


def test_missing_vggish_file_says_where_it_looked_and_how_to_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = str(tmp_path / "models" / "vggish.weights.h5")
    assert vggish_cache_path() == expected
    with pytest.raises(BackboneError) as error:
        build_vggish("vggish")
    assert expected in str(error.value) and "features.vggish_convert" in str(error.value)
    with pytest.raises(BackboneError, match="no such file"):
        resolve_vggish_weights(str(tmp_path / "absent.weights.h5"))


def test_weights_file_round_trips(tmp_path, embedder):
    path = str(tmp_path / "mine.weights.h5")
    embedder.model.save_weights(path)
    source = resolve_vggish_weights(path)
    assert source.kind == "path" and len(source.sha256) == 64
    examples = np.random.default_rng(2).normal(size=(1, 96, 64)).astype(np.float32)
    np.testing.assert_array_equal(build_vggish(path)(examples), embedder.model(examples))


def _write_fake_checkpoint(path: str) -> dict[str, np.ndarray]:
    """A TF1 (V1, single-file, like vggish_model.ckpt) checkpoint of VGGish's variables."""
    rng = np.random.default_rng(7)
    tensors = {"global_step": np.array(1000, np.int64)}  # not VGGish's: ignored
    for scope, shape in PUBLISHED_SHAPES.items():
        fan_in = np.prod(shape[:-1])
        tensors[f"{scope}/weights"] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        tensors[f"{scope}/biases"] = rng.normal(0, 0.01, shape[-1:]).astype(np.float32)
    tf.raw_ops.Save(filename=path, tensor_names=list(tensors), data=list(tensors.values()))
    return tensors


def _published_forward(tensors: dict[str, np.ndarray], examples: np.ndarray) -> np.ndarray:
    """vggish_slim's graph in plain tf.nn: SAME 3x3 convs + ReLU, SAME 2x2 pools, fc layers."""
    x = tf.reshape(examples, [-1, 96, 64, 1])
    for group in (
        ["conv1"],
        ["conv2"],
        ["conv3/conv3_1", "conv3/conv3_2"],
        ["conv4/conv4_1", "conv4/conv4_2"],
    ):
        for scope in group:
            x = tf.nn.conv2d(x, tensors[f"vggish/{scope}/weights"], 1, "SAME")
            x = tf.nn.relu(x + tensors[f"vggish/{scope}/biases"])
        x = tf.nn.max_pool2d(x, 2, 2, "SAME")
    x = tf.reshape(x, [x.shape[0], -1])
    for scope in ("fc1/fc1_1", "fc1/fc1_2"):
        x = tf.nn.relu(x @ tensors[f"vggish/{scope}/weights"] + tensors[f"vggish/{scope}/biases"])
    return (x @ tensors["vggish/fc2/weights"] + tensors["vggish/fc2/biases"]).numpy()


@pytest.mark.slow  # a full-size (288 MB) fake checkpoint: about 20 s
def test_converter_maps_checkpoint_variables_onto_layers(tmp_path, monkeypatch):
    checkpoint = str(tmp_path / "vggish_model.ckpt")
    tensors = _write_fake_checkpoint(checkpoint)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert main([checkpoint]) == 0  # default output: the Keras cache
    model = build_vggish("vggish")
    np.testing.assert_array_equal(
        model.get_layer("conv3_2").kernel.numpy(), tensors["vggish/conv3/conv3_2/weights"]
    )
    np.testing.assert_array_equal(model.get_layer("fc2").bias.numpy(), tensors["vggish/fc2/biases"])
    examples = np.random.default_rng(3).normal(size=(2, 96, 64)).astype(np.float32)
    np.testing.assert_allclose(
        model(examples).numpy(), _published_forward(tensors, examples), rtol=1e-4, atol=1e-4
    )


def test_converter_reads_every_published_variable_name_and_checks_shapes(tmp_path):
    # Every VGGish name at a tiny shape: the name mapping is checked in milliseconds, the
    # full-size conversion in the slow test above.
    checkpoint = str(tmp_path / "small.ckpt")
    names = [f"{scope}/{part}" for scope in PUBLISHED_SHAPES for part in ("weights", "biases")]
    values = [np.full(1, index, np.float32) for index in range(len(names))]
    tf.raw_ops.Save(
        filename=checkpoint,
        tensor_names=[*names, "global_step", "vggish/fc2/weights/Adam"],
        data=[*values, np.array(7, np.int64), np.zeros(1, np.float32)],
    )
    tensors = read_checkpoint(checkpoint)
    assert sorted(tensors) == sorted(names)  # VGGish's 18, nothing else
    for name, value in zip(names, values, strict=True):
        np.testing.assert_array_equal(tensors[name], value)
    with pytest.raises(ConversionError, match=r"vggish/conv1/weights has shape \[1\], VGGish"):
        convert(checkpoint, str(tmp_path / "out.weights.h5"))
    assert not (tmp_path / "out.weights.h5").exists()


def test_converter_names_missing_variables(tmp_path, capsys):
    checkpoint = str(tmp_path / "other.ckpt")
    tf.raw_ops.Save(
        filename=checkpoint,
        tensor_names=["vggish/conv1/weights"],
        data=[np.zeros((3, 3, 1, 64), np.float32)],
    )
    with pytest.raises(ConversionError, match="missing vggish/conv1/biases, vggish/conv2/weights"):
        convert(checkpoint, str(tmp_path / "out.weights.h5"))
    assert main([checkpoint, "--output", str(tmp_path / "out.weights.h5")]) == 2
    assert "not a VGGish checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out.weights.h5").exists()


def test_vggish_pca_becomes_an_equivalent_whitening_transform(tmp_path):
    rng = np.random.default_rng(0)
    directions, _ = np.linalg.qr(rng.normal(size=(128, 128)))  # columns: unit eigenvectors
    variances = np.geomspace(50.0, 0.05, 128)  # descending
    eigen_vectors = (directions / np.sqrt(variances)).T  # rows: whitened eigenvectors
    means = rng.normal(size=128)
    path = tmp_path / "vggish_pca_params.npz"
    np.savez(path, pca_eigen_vectors=eigen_vectors, pca_means=means.reshape(-1, 1))
    assert is_vggish_pca_file(path)

    pca = load_vggish_pca(path)
    assert isinstance(pca, PcaTransform) and pca.output_dims == 128 and pca.epsilon == 0.0
    np.testing.assert_allclose(pca.eigenvalues, variances, rtol=1e-5)
    np.testing.assert_allclose(pca.components, directions, atol=1e-5)
    embeddings = rng.normal(size=(16, 128)) * 3
    published = (eigen_vectors @ (embeddings.T - means.reshape(-1, 1))).T  # postprocessor's PCA
    np.testing.assert_allclose(pca.apply(embeddings), published, rtol=1e-4, atol=1e-4)
    # The postprocessor truncates to a level where features.quantize rounds: 0 or 1 above.
    truncated = ((np.clip(published, -2, 2) + 2) * (255 / 4)).astype(np.uint8)
    difference = quantize(pca.apply(embeddings)).astype(int) - truncated
    assert set(np.unique(difference)) <= {0, 1}


def test_a_saved_pca_file_is_not_taken_for_vggish(tmp_path):
    path = tmp_path / "pca.npz"
    PcaTransform(np.zeros(2), np.eye(2), np.ones(2), 1e-4).save(path)
    assert not is_vggish_pca_file(path)
    with pytest.raises(ValueError, match="lacks key"):
        load_vggish_pca(path)
