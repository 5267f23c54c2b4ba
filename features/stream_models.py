"""The network of each picture stream, behind one dispatcher the pipeline calls.

rgb and fovea: a registry backbone on frames; flow: the backbone on stacks of flow fields
(features.flow_backbone); i3d: the backbone inflated to clips (features.inflate); c3d: C3D
(features.c3d, backbone "c3d"). audio is VGGish (features.vggish), not handled here. Every
model takes uint8 input and returns float32 [B, D], so FrameEmbedder runs any of them.
Shapes and dims come without building anything; Keras loads only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from features.formats import (
    AUDIO_KEY,
    C3D_BACKBONE,
    C3D_FEATURE_DIMS,
    C3D_FRAME_SIZE,
    C3D_KEY,
    CLIP_FRAMES,
    FLOW_KEY,
    FLOW_PAIRS,
    FOVEA_KEY,
    I3D_KEY,
    RGB_KEY,
)

if TYPE_CHECKING:
    import keras

    from features.backbones import WeightsSource

PICTURE_STREAMS = (RGB_KEY, FOVEA_KEY, FLOW_KEY, I3D_KEY, C3D_KEY)


def weights_flag(stream: str) -> str:
    """The option that sets `stream`'s weights: rgb and fovea share --weights."""
    return "--weights" if stream in (RGB_KEY, FOVEA_KEY) else f"--{stream}_weights"


def stream_input_shape(stream: str, backbone: str) -> tuple[int, ...]:
    """One sample's uint8 input, without the batch axis: rgb, fovea (H, W, 3); flow
    (H, W, 2 * FLOW_PAIRS); i3d (CLIP_FRAMES, H, W, 3); c3d (16, 112, 112, 3)."""
    _check(stream, backbone)
    if stream == C3D_KEY:
        return (CLIP_FRAMES, *C3D_FRAME_SIZE, 3)
    from features.backbones import get_spec

    size = get_spec(backbone).input_size
    if stream == FLOW_KEY:
        return (*size, 2 * FLOW_PAIRS)
    if stream == I3D_KEY:
        return (CLIP_FRAMES, *size, 3)
    return (*size, 3)


def stream_feature_dims(stream: str, backbone: str) -> int:
    """Width of the stream's features: the backbone's pooled dims, or C3D's fc6 (4096)."""
    _check(stream, backbone)
    if stream == C3D_KEY:
        return C3D_FEATURE_DIMS
    from features.backbones import get_spec

    return get_spec(backbone).feature_dims


def resolve_stream_weights(stream: str, backbone: str, weights: str, seed: int) -> WeightsSource:
    """Check `stream`'s weights before any work (a file exists, the ImageNet file is in the
    Keras cache) and hash a file; a BackboneError names the stream's flag and the fix."""
    _check(stream, backbone)
    if stream == C3D_KEY:
        from features.c3d import resolve_c3d_weights

        return resolve_c3d_weights(weights, seed)
    from features.backbones import resolve_weights

    return resolve_weights(backbone, weights, seed, weights_flag(stream))


def build_stream_model(stream: str, backbone: str, weights: str, seed: int) -> keras.Model:
    """`stream`'s network with `weights` ("imagenet", "random" seeded by `seed`, or a file):
    uint8 [B, *stream_input_shape] -> float32 [B, stream_feature_dims]."""
    _check(stream, backbone)
    if stream == FLOW_KEY:
        from features.flow_backbone import build_flow_backbone

        return build_flow_backbone(backbone, weights, seed)
    if stream == I3D_KEY:
        from features.inflate import build_i3d

        return build_i3d(backbone, weights, seed)
    if stream == C3D_KEY:
        from features.c3d import build_c3d

        return build_c3d(weights, seed)
    from features.backbones import build_backbone

    return build_backbone(backbone, weights, seed, weights_flag(stream))


def _check(stream: str, backbone: str) -> None:
    """Streams this module serves, and C3D exactly when the stream is c3d."""
    from features.backbones import BackboneError  # a ValueError; light after the first import

    if stream == AUDIO_KEY:
        raise BackboneError("the audio stream is VGGish: build it with features.vggish")
    if stream not in PICTURE_STREAMS:
        raise BackboneError(f"stream {stream!r}: choose one of {', '.join(PICTURE_STREAMS)}")
    if (stream == C3D_KEY) != (backbone == C3D_BACKBONE):
        expected = f"backbone {C3D_BACKBONE!r}" if stream == C3D_KEY else "a frame backbone"
        raise BackboneError(f"stream {stream!r} with backbone {backbone!r}: expected {expected}")
