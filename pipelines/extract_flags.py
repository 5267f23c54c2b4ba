"""`extract_features`' flags: what to read and write, and how each feature stream is computed.

Light on purpose (no TensorFlow, Keras or Beam): `--help` answers at once.
"""

from __future__ import annotations

import argparse

from features.cli import Parser, finite_float, int_at_least, positive_float
from features.decoding import DECODE_DEVICES, DECODE_EXACT, DECODE_MODES, DEVICE_AUTO
from features.formats import (
    AUDIO_DIMS,
    BACKBONE_NAMES,
    C3D_DIMS,
    DEFAULT_BACKBONE,
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_PCA_SAMPLE_FRAMES,
    DEFAULT_STREAMS,
    FLOW_KEY,
    FOVEA_KEY,
    I3D_KEY,
    MAX_PCA_DIMS,
    RGB_KEY,
    STREAM_NAMES,
)
from pipelines.beam_options import beam_option_names
from pipelines.compute_flags import add_compute_flags

PROG = "extract_features"


def build_parser(description: str) -> Parser:
    """The parser; `description` is the entry point's one-line summary."""
    parser = Parser(
        PROG,
        description,
        passthrough=beam_option_names,
        epilog="Beam's own flags pass through (e.g. --runner, --direct_num_workers).",
    )
    parser.add_argument("--input", required=True, help="video folder (recursive), glob or gs://")
    parser.add_argument("--output", required=True, help="output folder or gs:// prefix")
    add_stream_flags(parser)
    add_decode_flags(parser)
    add_compute_flags(parser)
    add_audio_flags(parser)
    add_motion_flags(parser)
    add_output_flags(parser)
    return parser


def stream_list(value: str) -> tuple[str, ...]:
    """`--streams rgb,audio,flow` -> ("rgb", "audio", "flow"); rgb is required and first."""
    names = tuple(name.strip() for name in value.split(","))
    unknown = [name for name in names if name not in STREAM_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown stream {unknown[0]!r} in {value!r}: choose from {','.join(STREAM_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{value!r} names a stream twice")
    if names[0] != RGB_KEY:
        raise argparse.ArgumentTypeError(f"{value!r}: rgb is required and comes first")
    return names


def add_audio_flags(parser: Parser) -> None:
    """Which streams, and how the audio stream is computed: VGGish, its PCA."""
    parser.add_argument(
        "--streams",
        type=stream_list,
        default=",".join(DEFAULT_STREAMS),
        help=f"feature lists to write, any of {','.join(STREAM_NAMES)} (rgb first, always)",
    )
    parser.add_argument(
        "--audio_weights",
        default="vggish",
        help="vggish (a converted checkpoint in the Keras cache: see vggish_convert), "
        "random (seeded He init, --seed) or a .weights.h5 file",
    )
    add_pca_flags(parser, "audio", AUDIO_DIMS, " or VGGish's vggish_pca_params.npz")


def add_pca_flags(parser: Parser, stream: str, default_dims: int | None, more: str = "") -> None:
    """--<stream>_pca and --<stream>_pca_dims, as rgb's --pca and --pca_dims."""
    parser.add_argument(
        f"--{stream}_pca",
        default="auto",
        help=f"auto (reuse <output>/{stream}_pca.npz, else fit), fit, or a PCA file "
        f"({stream}_pca.npz{more})",
    )
    parser.add_argument(
        f"--{stream}_pca_dims",
        type=int_at_least(1),
        default=default_dims,
        help=f"bytes per row of the {stream} feature list"
        + ("" if default_dims else f" (unset: min({MAX_PCA_DIMS}, the network's dims))"),
    )


def add_motion_flags(parser: Parser) -> None:
    """The motion and clip streams: optical flow, I3D, C3D and the fovea (centre) stream."""
    parser.add_argument(
        "--flow_weights",
        default="imagenet",
        help="the flow CNN is --backbone with its first convolution averaged over RGB and "
        "replicated over the flow channels: imagenet, random or a weights file",
    )
    add_pca_flags(parser, FLOW_KEY, None)
    parser.add_argument(
        "--i3d_backbone",
        choices=BACKBONE_NAMES,
        help="2D network inflated to 3D for the i3d stream (unset: --backbone)",
    )
    parser.add_argument(
        "--i3d_weights",
        default="imagenet",
        help="imagenet or a 2D weights file (inflated), random, or an inflated .weights.h5",
    )
    add_pca_flags(parser, I3D_KEY, None)
    parser.add_argument(
        "--c3d_weights",
        default="",
        help="required with --streams ...,c3d: a C3D .weights.h5 file, or random (seeded)",
    )
    add_pca_flags(parser, "c3d", C3D_DIMS)
    add_pca_flags(parser, FOVEA_KEY, None)


def add_stream_flags(parser: Parser) -> None:
    """How the rgb stream is computed: sampling, CNN, PCA."""
    parser.add_argument(
        "--fps", type=positive_float, default=DEFAULT_FPS, help="frames sampled per second"
    )
    parser.add_argument(
        "--max_frames", type=int_at_least(0), default=DEFAULT_MAX_FRAMES, help="0 = no cap"
    )
    parser.add_argument(
        "--backbone", default=DEFAULT_BACKBONE, choices=BACKBONE_NAMES, help="frame CNN"
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (from the Keras cache), random (seeded He init) or a weights file",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    parser.add_argument(
        "--pca",
        default="auto",
        help="auto (reuse <output>/pca.npz, else fit), fit, or a pca.npz / YouTube-8M PCA folder",
    )
    parser.add_argument(
        "--pca_dims", type=int_at_least(1), help=f"unset: min({MAX_PCA_DIMS}, backbone dims)"
    )
    parser.add_argument(
        "--pca_sample_frames",
        type=int_at_least(2),
        default=DEFAULT_PCA_SAMPLE_FRAMES,
        help="frames sampled to fit the PCA",
    )


def add_decode_flags(parser: Parser, modes: bool = True) -> None:
    """How frames are decoded: --decode (which frames samples come from) and --decode_device
    (where); tag_videos takes the mode from the model's manifest, so only the device."""
    if modes:
        parser.add_argument(
            "--decode",
            choices=DECODE_MODES,
            default=DECODE_EXACT,
            help="exact: every frame; fast: FFmpeg skips frames no other frame references "
            "(most B-frames), each sample the nearest decoded frame (not with flow, i3d, c3d)",
        )
    parser.add_argument(
        "--decode_device",
        choices=DECODE_DEVICES,
        default=DEVICE_AUTO,
        help="auto: an NVIDIA GPU's decoder (NVDEC) when there is one, else the CPU; a video "
        "the GPU refuses is decoded on the CPU (counted: hw_decode_fallbacks)",
    )


def add_output_flags(parser: Parser) -> None:
    """Labels, ids and how a run adds to an output."""
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", default="", help="CSV `id,labels` (names or indices, ;-sep)")
    labels.add_argument(
        "--labels_from_folders", action="store_true", help="label = the video's parent folder"
    )
    parser.add_argument("--vocabulary", default="", help="reuse this Index,Name vocabulary.csv")
    parser.add_argument("--id_root", default="", help="ids are paths relative to this folder")
    parser.add_argument(
        "--num_shards", type=int_at_least(0), default=0, help="0 = one per 1,000 videos"
    )
    parser.add_argument(
        "--skip_existing",
        action="store_true",
        help="add to an output: process only videos not in a committed run",
    )
    parser.add_argument(
        "--lease_timeout",
        type=finite_float(0, low_open=True),
        default=86400.0,
        help="seconds after which another run's lease on --output counts as stale",
    )
    parser.add_argument(
        "--break_lease", action="store_true", help="take over a stale lease on --output"
    )
