"""Frame backbones: uint8 RGB frames in, pooled float32 features out.

Every backbone carries its own preprocessing, so callers only resize frames to
`input_size`. Weights never come from the network at run time: ImageNet weights are read
from the Keras cache (`$KERAS_HOME/models`, as `keras.applications` would store them) or
from an explicit file, and a seeded variance-preserving random init serves tests and
smoke runs.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

from features.formats import BACKBONE_NAMES, DEFAULT_BACKBONE  # noqa: F401 -- re-exported


class BackboneError(ValueError):
    """A backbone name, weights choice or frame batch the user must fix."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a pipeline needs to know about a backbone before building it."""

    name: str
    input_size: tuple[int, int]  # (height, width)
    feature_dims: int
    preprocessing: str  # FramePreprocessing mode
    imagenet_url: str = ""  # keras-applications' notop file; "" = no ImageNet weights
    imagenet_md5: str = ""  # the hash keras-applications checks the cached file against

    @property
    def imagenet_file(self) -> str:
        """File name of the ImageNet weights in the Keras cache."""
        return self.imagenet_url.rsplit("/", 1)[-1]


_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "inception_v3",
            (299, 299),
            2048,
            "inception",
            _KERAS_APPS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
        BackboneSpec(
            "resnet50",
            (224, 224),
            2048,
            "caffe",
            _KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626",
        ),
        BackboneSpec(
            "efficientnet_b0",
            (224, 224),
            1280,
            "none",
            "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
            "50bc09e76180e00e4465e1a485ddc09d",
        ),
        BackboneSpec(
            "mobilenet_v3_small",
            (224, 224),
            576,
            "none",
            _KERAS_APPS + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "d3e8ec802a04aa4fc771ee12a9a9b836",
        ),
        BackboneSpec("tiny", (64, 64), 256, "inception"),
    )
}
if tuple(BACKBONES) != BACKBONE_NAMES:
    raise ImportError(f"features.formats.BACKBONE_NAMES {BACKBONE_NAMES} != {tuple(BACKBONES)}")

# Caffe-style (ResNet50) per-channel ImageNet means, in BGR order.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# keras-applications' ImageNet EfficientNet rescales after its Normalization layer by
# 1/sqrt(std) per channel (keras issue tensorflow#49930); we fold that into the variance.
_EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)
_LEGACY_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights come from; recorded in the pipeline's manifest."""

    kind: str  # "imagenet" | "random" | "path"
    path: str = ""
    sha256: str = ""
    seed: int | None = None


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for `name`, or a BackboneError listing the choices."""
    try:
        return BACKBONES[name]
    except KeyError:
        choices = ", ".join(sorted(BACKBONES))
        raise BackboneError(
            f"--backbone {name!r}: unknown backbone; choose one of {choices}"
        ) from None


def imagenet_cache_path(name: str, flag: str = "--weights") -> str:
    """Where keras-applications keeps (and would download) `name`'s ImageNet file.

    Mirrors keras' get_file ($KERAS_HOME, else ~/.keras; /tmp/.keras when that is not
    writable) but reads the environment at call time, where keras reads it at import.
    """
    spec = get_spec(name)
    if not spec.imagenet_url:
        raise BackboneError(
            f"{flag} imagenet: backbone {name!r} has no ImageNet weights; "
            f"use {flag} random or {flag} PATH"
        )
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, "models", spec.imagenet_file)


def resolve_weights(
    name: str, weights: str, seed: int = 0, flag: str = "--weights"
) -> WeightsSource:
    """Check `weights` for backbone `name` without building anything; hash any file.

    Errors name `flag`, the option the user passed (--flow_weights for the flow stream).
    """
    spec = get_spec(name)
    if weights == "random":
        return WeightsSource("random", seed=seed)
    if weights == "imagenet":
        path = imagenet_cache_path(name, flag)
        if not os.path.isfile(path):
            raise BackboneError(
                f"{flag} imagenet: {path} not found and nothing is downloaded at run time. "
                f"Place {spec.imagenet_url} there (or set KERAS_HOME), or pass {flag} PATH"
            )
        sha256, md5 = file_hashes(path)
        if md5 != spec.imagenet_md5:
            raise BackboneError(
                f"{flag} imagenet: {path} has md5 {md5}, keras-applications expects "
                f"{spec.imagenet_md5}; replace it with {spec.imagenet_url} or pass {flag} PATH"
            )
        return WeightsSource("imagenet", path=path, sha256=sha256)
    path = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isfile(path):
        raise BackboneError(
            f"{flag} {weights}: no such file (expected 'imagenet', 'random' or a weights file)"
        )
    if not path.endswith(".weights.h5") and not path.endswith(_LEGACY_SUFFIXES):
        raise BackboneError(
            f"{flag} {weights}: expected a Keras '.weights.h5' file or a legacy "
            "keras-applications '.h5' file"
        )
    return WeightsSource("path", path=path, sha256=file_hashes(path)[0])


def build_backbone(
    name: str, weights: str = "random", seed: int = 0, flag: str = "--weights"
) -> keras.Model:
    """uint8 [B, H, W, 3] RGB -> float32 [B, D] pooled features, weights as resolved.

    `.weights.h5` files load into the returned model (what its `save_weights` writes) or
    else into the architecture inside it (as a bare `keras.applications` model saves them);
    legacy `.h5` files are keras-applications notop files and load into the architecture.
    """
    spec = get_spec(name)
    source = resolve_weights(name, weights, seed, flag)
    frames = keras.Input((*spec.input_size, 3), dtype="uint8", name="frames")
    base = build_architecture(spec)
    features = base(FramePreprocessing(spec.preprocessing)(frames))
    model = keras.Model(frames, features, name=f"{name}_backbone")
    if source.kind == "random":
        reinitialise(model, seed)
    elif source.path.endswith(".weights.h5"):
        load_first_fitting(source.path, f"{flag} {weights}", model, base)
    else:
        load_first_fitting(source.path, f"{flag} {weights}", base)
        if name == "efficientnet_b0":
            _fold_efficientnet_rescale(base)
    return model


@keras.saving.register_keras_serializable(package="framevlad")
class FramePreprocessing(keras.layers.Layer):
    """uint8 RGB frames -> the float input range an architecture was trained on.

    Modes: "inception" (x / 127.5 - 1), "caffe" (BGR minus ImageNet means) and "none"
    (float 0..255, for models that rescale internally: EfficientNet, MobileNetV3).
    """

    MODES = ("inception", "caffe", "none")

    def __init__(self, mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise BackboneError(f"preprocessing {mode!r}: choose one of {', '.join(self.MODES)}")
        self.mode = mode

    def call(self, frames):
        x = keras.ops.cast(frames, "float32")
        if self.mode == "inception":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return keras.ops.flip(x, axis=-1) - keras.ops.array(_CAFFE_MEAN_BGR, "float32")
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def build_architecture(spec: BackboneSpec, channels: int = 3) -> keras.Model:
    """The architecture without its classifier, average-pooled, with no weights loaded:
    float [B, H, W, channels] -> [B, D]. Other channel counts than 3 serve the flow stream."""
    shape = (*spec.input_size, channels)
    apps = keras.applications
    kwargs = {"include_top": False, "weights": None, "pooling": "avg", "input_shape": shape}
    with warnings.catch_warnings():
        # keras-applications warns about any input that is not RGB or grey.
        warnings.filterwarnings("ignore", "This model usually expects", UserWarning)
        if spec.name == "inception_v3":
            return apps.InceptionV3(**kwargs)
        if spec.name == "resnet50":
            return apps.ResNet50(**kwargs)
        if spec.name == "efficientnet_b0":
            return apps.EfficientNetB0(**kwargs)
        if spec.name == "mobilenet_v3_small":
            return apps.MobileNetV3Small(**kwargs, include_preprocessing=True)
    return _tiny_cnn(shape, spec.feature_dims)


def _tiny_cnn(shape: tuple[int, int, int], feature_dims: int) -> keras.Model:
    """Four strided 3x3 conv+ReLU layers: thousands of frames/s on a CPU, for tests."""
    x = inputs = keras.Input(shape)
    for filters in (feature_dims // 8, feature_dims // 4, feature_dims // 2, feature_dims):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")


def leaf_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """The layers of `layer`, nested models flattened, in the models' layer order."""
    nested = getattr(layer, "layers", None)
    if nested is None:
        yield layer
        return
    for child in nested:
        yield from leaf_layers(child)


def reinitialise(model: keras.Model, seed: int) -> None:
    """He-normal every conv/dense kernel from one seeded stream, in layer order.

    Keras' default Glorot init halves the signal's variance at every ReLU, so a deep
    random net's features shrink towards zero; fan-in scaling keeps them informative.
    Depthwise kernels see kh*kw inputs per output, not kh*kw*channels.
    """
    rng = np.random.default_rng(seed)
    for layer in leaf_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        shape = tuple(kernel.shape)
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        fan_in = int(np.prod(shape[:-2] if depthwise else shape[:-1]))
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        kernel.assign(values)


def load_first_fitting(path: str, option: str, *targets: keras.Model) -> None:
    """Load into the first target the file fits; keras' own mismatch messages are noise.

    `option` is the flag and value the user passed, named in the error (`--weights x.h5`).
    """
    errors = []
    for target in targets:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                target.load_weights(path)
            return
        except (ValueError, KeyError, OSError) as error:
            errors.append(f"{target.name}: {str(error).splitlines()[0]}")
    raise BackboneError(f"{option}: cannot load into {'; nor '.join(errors)}")


def _fold_efficientnet_rescale(base: keras.Model) -> None:
    """Match keras' ImageNet EfficientNet, which adds a Rescaling we did not build."""
    norm = next(x for x in leaf_layers(base) if isinstance(x, keras.layers.Normalization))
    stddev = np.asarray(_EFFICIENTNET_STDDEV_RGB, dtype=np.float32)
    norm.adapt_variance.assign(np.asarray(norm.adapt_variance) * stddev)
    norm.finalize_state()


def file_hashes(path: str) -> tuple[str, str]:
    """(sha256, md5) of a file in one pass: sha256 for manifests, md5 as keras checks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()
