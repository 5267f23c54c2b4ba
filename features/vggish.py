"""VGGish, the AudioSet audio CNN, in Keras 3: [B, 96, 64] log-mel -> [B, 128] embeddings.

The architecture is the published one (tensorflow/models research/audioset/vggish_slim.py):
3x3 SAME convolutions with ReLU (64, 128, 2x256, 2x512), each group followed by a 2x2 max
pool, then fully connected 4096, 4096 (ReLU) and a 128-wide embedding. The embedding has no
ReLU: the original 2017 definition applied one, the current published definition and README
return the pre-activation values, and we follow the current one.

Layer names map 1:1 onto the TF1 checkpoint's scopes (`checkpoint_scope`), which is what
features.vggish_convert relies on. Weights are never downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os

import keras
import numpy as np

from features.audio import EXAMPLE_FRAMES, MEL_BANDS
from features.backbones import BackboneError, WeightsSource, reinitialise
from features.embedder import FrameEmbedder

EMBEDDING_DIMS = 128
VGGISH_WEIGHTS_FILE = "vggish.weights.h5"
CONVERT_COMMAND = "python -m features.vggish_convert vggish_model.ckpt"

# Keras layer names, one tuple per convolution group (a max pool follows each); slim.repeat
# scoped the repeated ones conv3/conv3_1, conv3/conv3_2, as checkpoint_scope restores.
_CONV_GROUPS: tuple[tuple[str, ...], ...] = (
    ("conv1",),
    ("conv2",),
    ("conv3_1", "conv3_2"),
    ("conv4_1", "conv4_2"),
)
_CONV_FILTERS = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512}
_HIDDEN_LAYERS = ("fc1_1", "fc1_2")
_HIDDEN_UNITS = 4096
_EMBEDDING_LAYER = "fc2"
WEIGHT_LAYERS: tuple[str, ...] = (
    *(name for group in _CONV_GROUPS for name in group),
    *_HIDDEN_LAYERS,
    _EMBEDDING_LAYER,
)


def checkpoint_scope(layer_name: str) -> str:
    """The TF1 variable scope of a Keras layer: conv1 -> vggish/conv1, fc1_2 -> vggish/fc1/fc1_2.

    Keras 3 forbids '/' in layer names, so repeated layers keep slim's inner name only.
    """
    if layer_name not in WEIGHT_LAYERS:
        raise KeyError(f"{layer_name!r} is not a VGGish weight layer")
    group, _, repeat = layer_name.partition("_")
    return f"vggish/{group}/{layer_name}" if repeat else f"vggish/{layer_name}"


def vggish_cache_path() -> str:
    """Where a converted VGGish file is looked up: $KERAS_HOME/models (default ~/.keras).

    The same rule as keras' get_file and features.backbones.imagenet_cache_path.
    """
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, "models", VGGISH_WEIGHTS_FILE)


def resolve_vggish_weights(weights: str, seed: int = 0) -> WeightsSource:
    """Check `weights` (vggish | random | a .weights.h5 path) without building; hash any file."""
    if weights == "random":
        return WeightsSource("random", seed=seed)
    if weights == "vggish":
        path = vggish_cache_path()
        if not os.path.isfile(path):
            raise BackboneError(
                f"--audio_weights vggish: {path} not found and nothing is downloaded at run "
                "time. Convert the published checkpoint (https://storage.googleapis.com/"
                f"audioset/vggish_model.ckpt) into it with `{CONVERT_COMMAND}` (set KERAS_HOME "
                "to choose the folder), or pass --audio_weights PATH"
            )
        return WeightsSource("vggish", path=path, sha256=_sha256(path))
    path = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isfile(path):
        raise BackboneError(
            f"--audio_weights {weights}: no such file (expected 'vggish', 'random' or a "
            "'.weights.h5' file)"
        )
    if not path.endswith(".weights.h5"):
        raise BackboneError(f"--audio_weights {weights}: expected a Keras '.weights.h5' file")
    return WeightsSource("path", path=path, sha256=_sha256(path))


def build_vggish(weights: str = "random", seed: int = 0) -> keras.Model:
    """float32 [B, 96, 64] log-mel examples -> float32 [B, 128] embeddings, weights resolved.

    "random" is seeded He-normal kernels and zero biases, as for random rgb backbones:
    VGGish's own N(0, 0.01) init would shrink the signal to nothing over 11 layers.
    """
    source = resolve_vggish_weights(weights, seed)
    model = vggish_architecture()
    if source.kind == "random":
        reinitialise(model, seed)
        return model
    try:
        model.load_weights(source.path)
    except (ValueError, KeyError, OSError) as error:
        raise BackboneError(
            f"--audio_weights {weights}: {source.path} does not fit VGGish "
            f"({str(error).splitlines()[0]})"
        ) from error
    return model


def vggish_architecture() -> keras.Model:
    """The VGGish graph with all-zero weights, for build_vggish or the converter to fill.

    Zeros, not Keras' Glorot draws: every weight is overwritten anyway, and drawing 72 M
    random numbers only to discard them takes seconds.
    """
    zeros = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
    examples = keras.Input((EXAMPLE_FRAMES, MEL_BANDS), dtype="float32", name="log_mel")
    x = keras.layers.Reshape((EXAMPLE_FRAMES, MEL_BANDS, 1), name="add_channel")(examples)
    for index, group in enumerate(_CONV_GROUPS, start=1):
        for name in group:
            filters = _CONV_FILTERS[name.partition("_")[0]]
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=name, **zeros
            )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{index}")(x)
    # Row-major [6, 4, 512] flattening, as slim.flatten of an NHWC tensor.
    x = keras.layers.Flatten(name="flatten")(x)
    for name in _HIDDEN_LAYERS:
        x = keras.layers.Dense(_HIDDEN_UNITS, activation="relu", name=name, **zeros)(x)
    embedding = keras.layers.Dense(EMBEDDING_DIMS, name=_EMBEDDING_LAYER, **zeros)(x)
    return keras.Model(examples, embedding, name="vggish")


class AudioEmbedder(FrameEmbedder):
    """float [n, 96, 64] log-mel examples -> float32 [n, 128], for a Beam ModelHandler.

    FrameEmbedder's fixed-shape batches, precision and XLA, taking any float examples.
    """

    @property
    def example_shape(self) -> tuple[int, ...]:
        """One example's shape: (96, 64) log-mel frames x bands."""
        return self.input_shape

    def embed(self, examples: np.ndarray) -> np.ndarray:
        """Embeddings of `examples`, row for row; n = 0 gives an empty [0, 128] array."""
        values = np.asarray(examples)
        if values.ndim != 3 or values.shape[1:] != self.example_shape:
            raise BackboneError(
                f"audio examples {values.dtype}{list(values.shape)}: expected float "
                f"[n, {', '.join(map(str, self.example_shape))}] log-mel"
            )
        return super().embed(values.astype(np.float32, copy=False))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
