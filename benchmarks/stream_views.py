"""The input views extract_features cuts for each picture stream, for the benchmarks.

Sizes and batches come from the same places the job takes them from
(features.stream_models.stream_input_shape, FeatureSpec.samples_per_batch), so a benchmark's
decode pass cuts what the job's does; pipelines.decode_embed.sample_views is the job's own
copy, which would pull Beam into every benchmark process.
"""

from __future__ import annotations

from features.clips import ClipView, View, clip_view, flow_view, fovea_view
from features.formats import C3D_BACKBONE, C3D_KEY, FLOW_KEY, FLOW_PAIRS, FOVEA_KEY, RGB_KEY
from features.stream_models import stream_input_shape
from features.streams import FeatureSpec

FLOW_FRAMES = "flow_frames"  # the 11 frames of a flow row, as a plain clip view (no flow)


def stream_backbone(stream: str, backbone: str) -> str:
    return C3D_BACKBONE if stream == C3D_KEY else backbone


def batch_rows(stream: str, frames_per_batch: int) -> int:
    """Rows per CNN batch and per decoded chunk, as extract_features sizes them."""
    spec = FeatureSpec(stream, "", "random", 0, (1, 1), 1.0, "fit", 1)
    return spec.samples_per_batch(frames_per_batch)


def stream_view(stream: str, backbone: str, frames_per_batch: int) -> View:
    """The view extract_features cuts for `stream` (its frame size, its batch of rows)."""
    network = FLOW_KEY if stream == FLOW_FRAMES else stream
    shape = stream_input_shape(network, stream_backbone(network, backbone))
    size, chunk = tuple(shape[-3:-1]), batch_rows(network, frames_per_batch)
    if stream == FLOW_FRAMES:
        return ClipView(FLOW_FRAMES, size, before=0, after=FLOW_PAIRS, chunk=chunk)
    if stream == FLOW_KEY:
        return flow_view(size, chunk)
    if stream == FOVEA_KEY:
        return fovea_view(size, chunk)
    return clip_view(stream, size, chunk)


def job_views(streams: list[str], backbone: str, frames_per_batch: int) -> list[View]:
    """The views one decode pass of extract_features --streams `streams` cuts."""
    return [
        stream_view(stream, backbone, frames_per_batch) for stream in streams if stream != RGB_KEY
    ]


def rgb_size(backbone: str) -> tuple[int, int]:
    return tuple(stream_input_shape(RGB_KEY, backbone)[:2])
