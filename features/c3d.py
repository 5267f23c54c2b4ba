"""C3D (Tran et al. 2015): uint8 [B, 16, 112, 112, 3] RGB clips -> float32 [B, 4096] fc6.

Eight 3 x 3 x 3 convolutions (64, 128, 256, 256, 512, 512, 512, 512 filters, ReLU), a
1 x 2 x 2 first pool and 2 x 2 x 2 pools after, then fc6 (4096, ReLU): the feature the
paper's video descriptors use. The layer names and the (0, 1, 1) padding before pool5
(7 x 7 -> 4 x 4, so fc6 reads 1 x 4 x 4 x 512 = 8192 values) follow the Keras ports of the
Sports-1M model, so that a converter can map their files later.

Preprocessing: the original subtracts the Sports-1M mean clip from BGR frames in 0..255;
we subtract that clip's per-channel means instead (BGR 90.25, 97.66, 101.41, as public C3D
ports use), which needs no mean file and differs from it only by the mean clip's spatial
and temporal variation.

Weights: "random" (seeded He init) or a `.weights.h5` file this model saved. No converter
of the shared Sports-1M Keras files: their layouts differ between ports (Theano- or
TensorFlow-ordered kernels; a flatten order before fc6 that the ports do not document), one
port reports TensorFlow activations diverging from conv4a on, and none can be checked here
without the file.
"""

from __future__ import annotations

import os

import keras

from features import backbones
from features.backbones import BackboneError, WeightsSource
from features.formats import C3D_BACKBONE, C3D_FEATURE_DIMS, C3D_FRAME_SIZE, CLIP_FRAMES

C3D_FLAG = "--c3d_weights"
C3D_INPUT_SHAPE = (CLIP_FRAMES, *C3D_FRAME_SIZE, 3)
# (name, filters) of the convolutions; a pool follows each group (after conv1, conv2, the b's).
_CONVOLUTIONS = (
    ("conv1", 64),
    ("conv2", 128),
    ("conv3a", 256),
    ("conv3b", 256),
    ("conv4a", 512),
    ("conv4b", 512),
    ("conv5a", 512),
    ("conv5b", 512),
)
_POOL_AFTER = {"conv1": "pool1", "conv2": "pool2", "conv3b": "pool3", "conv4b": "pool4"}
SPORTS1M_MEAN_BGR = (90.25, 97.66, 101.41)


@keras.saving.register_keras_serializable(package="framevlad")
class ClipPreprocessing(keras.layers.Layer):
    """uint8 RGB clips [B, T, H, W, 3] -> float BGR minus the Sports-1M channel means."""

    def call(self, clips):
        x = keras.ops.flip(keras.ops.cast(clips, "float32"), axis=-1)
        return x - keras.ops.array(SPORTS1M_MEAN_BGR, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape


def resolve_c3d_weights(weights: str, seed: int = 0) -> WeightsSource:
    """Check C3D `weights` ("random" or a `.weights.h5` file) before any work; hash a file."""
    if weights == "random":
        return WeightsSource("random", seed=seed)
    if weights == "imagenet":
        raise BackboneError(
            f"{C3D_FLAG} imagenet: C3D has no ImageNet weights; "
            f"pass {C3D_FLAG} PATH (a C3D .weights.h5) or {C3D_FLAG} random"
        )
    path = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isfile(path):
        raise BackboneError(
            f"{C3D_FLAG} {weights}: no such file (expected 'random' or a C3D .weights.h5 file)"
        )
    if not path.endswith(".weights.h5"):
        raise BackboneError(f"{C3D_FLAG} {weights}: expected a C3D '.weights.h5' file")
    return WeightsSource("path", path=path, sha256=backbones.file_hashes(path)[0])


def build_c3d(weights: str = "random", seed: int = 0) -> keras.Model:
    """uint8 [B, 16, 112, 112, 3] RGB clips -> float32 [B, 4096] fc6 features."""
    source = resolve_c3d_weights(weights, seed)
    clips = keras.Input(C3D_INPUT_SHAPE, dtype="uint8", name="clips")
    x = ClipPreprocessing(name="clip_preprocessing")(clips)
    for name, filters in _CONVOLUTIONS:
        x = keras.layers.Conv3D(filters, 3, padding="same", activation="relu", name=name)(x)
        if name in _POOL_AFTER:
            size = (1, 2, 2) if name == "conv1" else (2, 2, 2)
            x = keras.layers.MaxPooling3D(size, size, name=_POOL_AFTER[name])(x)
    x = keras.layers.ZeroPadding3D((0, 1, 1), name="pool5_padding")(x)
    x = keras.layers.MaxPooling3D(2, 2, name="pool5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    features = keras.layers.Dense(C3D_FEATURE_DIMS, activation="relu", name="fc6")(x)
    model = keras.Model(clips, features, name=C3D_BACKBONE)
    if source.kind == "random":
        backbones.reinitialise(model, seed)
    else:
        backbones.load_first_fitting(source.path, f"{C3D_FLAG} {weights}", model)
    return model
