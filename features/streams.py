"""A feature stream (rgb, audio, flow, i3d, c3d, fovea) is one small spec.

Built from flags by extract_features' config, or from a model directory's manifest by
tag_videos; the decode-and-embed transform computes one feature list per spec. Light on
purpose (no Keras or Beam import), so entry points can build specs before anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from features import storage
from features.decoding import DECODE_EXACT, DEVICE_AUTO
from features.formats import (
    AUDIO_DIMS,
    AUDIO_FRAME_SIZE,
    AUDIO_KEY,
    C3D_KEY,
    CLIP_FRAMES,
    DEFAULT_PCA_SAMPLE_FRAMES,
    FLOAT32,
    FLOW_KEY,
    FLOW_PAIRS,
    I3D_KEY,
    PCA_FILE,
    RGB_KEY,
    VGGISH_BACKBONE,
)
from framevlad_proto import framevlad_pb2

if TYPE_CHECKING:
    from features.backbones import WeightsSource

MEAN_PREFIX = "mean_"


@dataclass(frozen=True)
class FeatureSpec:
    """How one feature list is computed: decode at `fps`, embed, whiten and quantize.

    The streams of a video share one decode pass, the first (rgb) spec's: its fps, decode
    and decode_device hold for all of them. `precision` and `jit_compile` say how the
    network computes on the machine at hand (features.precision), not what it computes."""

    name: str  # the feature list's key: "rgb" | "audio"
    backbone: str  # a features.backbones name, or "vggish" for audio
    weights: str  # imagenet | vggish | random | a weights file path/URL (as given)
    seed: int  # of random weights
    frame_size: tuple[int, int]  # the network's input (height, width); audio: (96, 64) log-mel
    fps: float
    pca: str  # auto | fit | a pca.npz path/URL | a YouTube-8M PCA folder | vggish_pca_params.npz
    dims: int  # PCA output dims = bytes per row of the feature list
    pca_sample_frames: int = DEFAULT_PCA_SAMPLE_FRAMES
    decode: str = DECODE_EXACT  # exact | fast: which frames the samples are chosen from
    decode_device: str = DEVICE_AUTO  # auto | cpu | gpu: where they are decoded
    precision: str = FLOAT32  # float32 | mixed (float16 convolutions and dense layers)
    jit_compile: bool | None = None  # XLA; None: where a GPU is present

    @property
    def record_key(self) -> str:
        """Key of the frame-level feature list (YouTube-8M: "rgb")."""
        return self.name

    @property
    def mean_key(self) -> str:
        """Key of the video-level mean feature (YouTube-8M: "mean_rgb")."""
        return MEAN_PREFIX + self.name

    @property
    def pca_file(self) -> str:
        """The stream's PCA file in an output: pca.npz for rgb, audio_pca.npz for audio."""
        return PCA_FILE if self.name == RGB_KEY else f"{self.name}_{PCA_FILE}"

    def samples_per_batch(self, frames_per_batch: int) -> int:
        """Samples per CNN batch (and per decoded chunk): about `frames_per_batch` frames'
        worth of pixels, so a clip stream's batches stay as big in memory as rgb's: a flow
        sample stacks 2L channels, an i3d or c3d sample 16 frames."""
        if self.name == FLOW_KEY:
            return max(1, frames_per_batch * 3 // (2 * FLOW_PAIRS))
        if self.name in (I3D_KEY, C3D_KEY):
            return max(1, frames_per_batch // CLIP_FRAMES)
        return frames_per_batch

    def flag(self, rgb_flag: str) -> str:
        """The stream's spelling of an rgb flag: --pca -> --audio_pca, --weights ->
        --audio_weights (errors name the flag the user passed)."""
        return rgb_flag if self.name == RGB_KEY else f"--{self.name}_{rgb_flag[2:]}"


def audio_spec(
    weights: str,
    seed: int,
    fps: float,
    pca: str,
    dims: int = AUDIO_DIMS,
    pca_sample_frames: int = DEFAULT_PCA_SAMPLE_FRAMES,
) -> FeatureSpec:
    """The audio stream: VGGish over one 0.96 s log-mel example per rgb sample time."""
    return FeatureSpec(
        name=AUDIO_KEY,
        backbone=VGGISH_BACKBONE,
        weights=weights,
        seed=seed,
        frame_size=AUDIO_FRAME_SIZE,
        fps=fps,
        pca=pca,
        dims=dims,
        pca_sample_frames=pca_sample_frames,
    )


def weights_flag(weights: framevlad_pb2.WeightsSource) -> str:
    """The --weights value that rebuilds recorded weights: the file for kind "path"."""
    return weights.path if weights.kind == "path" else weights.kind


def decode_mode(manifest: framevlad_pb2.Manifest) -> str:
    """The decode mode a manifest records; manifests written before the field were exact."""
    return manifest.decode_mode or DECODE_EXACT


def specs_from_manifest(manifest: framevlad_pb2.Manifest, folder: str) -> tuple[FeatureSpec, ...]:
    """The streams a manifest (as read_manifest returns it) records, to compute them again
    (decoded as it records, on any device); each PCA is the file beside the manifest in
    `folder` (local or gs://)."""
    return tuple(
        FeatureSpec(
            name=stream.name,
            backbone=stream.backbone,
            weights=weights_flag(stream.weights),
            seed=stream.weights.seed,
            frame_size=(stream.frame_height, stream.frame_width),
            fps=manifest.fps,
            pca=storage.join(folder, stream.pca.file),
            dims=stream.dims,
            decode=decode_mode(manifest),
        )
        for stream in manifest.streams
    )


def stream_info(
    spec: FeatureSpec, weights: WeightsSource, pca_meta: framevlad_pb2.PcaInfo
) -> framevlad_pb2.StreamInfo:
    """What the manifest records about a stream a run computed: enough to rebuild it."""
    return framevlad_pb2.StreamInfo(
        name=spec.name,
        backbone=spec.backbone,
        weights=framevlad_pb2.WeightsSource(
            kind=weights.kind, path=weights.path, sha256=weights.sha256, seed=weights.seed or 0
        ),
        frame_height=spec.frame_size[0],
        frame_width=spec.frame_size[1],
        pca=pca_meta,
        dims=pca_meta.output_dims or spec.dims,
    )
