"""`extract_features`: videos -> 1 fps frames -> CNN -> PCA + 8-bit -> YouTube-8M TFRecords.

    extract_features --input videos/ --output features/ [--labels labels.csv] [Beam options]

Writes `<output>/frame/*.tfrecord` (SequenceExample: context id, labels, has_audio; feature
lists rgb, audio), `<output>/video/*.tfrecord` (Example: id, labels, has_audio, mean_rgb,
mean_audio), `pca.npz`, `audio_pca.npz`, `vocabulary.csv`, `failed-*.jsonl` (one line per
input without features) and, last, `manifest.json`. `--streams rgb` writes rgb only (no
audio keys, no has_audio), as YouTube-8M's starter extractor's records.

Flags are parsed and checked before TensorFlow or Beam is imported: `--help` is instant.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from typing import TYPE_CHECKING

from features import storage
from features.cli import (
    Parser,
    UsageError,
    finite_float,
    int_at_least,
    positive_float,
    quiet,
    run_main,
)
from features.formats import (
    AUDIO_DIMS,
    AUDIO_KEY,
    BACKBONE_NAMES,
    DEFAULT_BACKBONE,
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_PCA_SAMPLE_FRAMES,
    DEFAULT_STREAMS,
    FAILED_PREFIX,
    FRAME_DIR,
    MANIFEST_FILE,
    MAX_PCA_DIMS,
    RGB_KEY,
    STREAM_NAMES,
    VGGISH_BACKBONE,
    VIDEO_DIR,
)
from features.streams import FeatureSpec, audio_spec
from pipelines.beam_options import beam_option_names
from pipelines.config import ExtractConfig, FaultPlan
from pipelines.inputs import resolve_input

if TYPE_CHECKING:
    import apache_beam as beam

PROG = "extract_features"


def build_parser() -> Parser:
    parser = Parser(
        PROG,
        __doc__.split("\n\n")[0],
        passthrough=beam_option_names,
        epilog="Beam's own flags pass through (e.g. --runner, --direct_num_workers).",
    )
    parser.add_argument("--input", required=True, help="video folder (recursive), glob or gs://")
    parser.add_argument("--output", required=True, help="output folder or gs:// prefix")
    add_stream_flags(parser)
    add_audio_flags(parser)
    add_output_flags(parser)
    return parser


def stream_list(value: str) -> tuple[str, ...]:
    """`--streams rgb,audio` -> ("rgb", "audio"); rgb is required and first."""
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
        help="feature lists to write: rgb,audio or rgb (rgb first, always)",
    )
    parser.add_argument(
        "--audio_weights",
        default="vggish",
        help="vggish (a converted checkpoint in the Keras cache: see vggish_convert), "
        "random (seeded He init, --seed) or a .weights.h5 file",
    )
    parser.add_argument(
        "--audio_pca",
        default="auto",
        help="auto (reuse <output>/audio_pca.npz, else fit), fit, or an audio_pca.npz / "
        "VGGish's vggish_pca_params.npz",
    )
    parser.add_argument(
        "--audio_pca_dims",
        type=int_at_least(1),
        default=AUDIO_DIMS,
        help="bytes per row of the audio feature list",
    )


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
        "--frames_per_batch", type=int_at_least(1), default=32, help="frames per CNN batch"
    )
    parser.add_alias("--batch_size", "--frames_per_batch")
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


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def check_file_flag(flag: str, path: str) -> str:
    if path and not storage.exists(path):
        raise UsageError("no such file", f"{flag} {path}", "check the path")
    if path and storage.is_dir(path):
        raise UsageError("is a folder, not a file", f"{flag} {path}", "pass the CSV file")
    return path


def check_output(output_arg: str) -> str:
    """The output folder, refused before any work when it (or a folder above it) is a file,
    or its bucket is missing."""
    output = storage.absolute(output_arg).rstrip("/")
    storage.check_bucket(output, "--output")
    folder = output
    while not storage.is_remote(folder) and not storage.exists(folder):
        folder = os.path.dirname(folder)  # the first part of the path that exists
    if storage.exists(folder) and not storage.is_dir(folder):
        raise UsageError(
            f"{folder} is a file, not a folder", f"--output {output_arg}", "pass a folder"
        )
    return output


def config_from_args(args: argparse.Namespace, beam_args: list[str]) -> ExtractConfig:
    """Flags -> a checked ExtractConfig (reads the backbone registry: imports Keras)."""
    from features import backbones

    spec = backbones.BACKBONES[args.backbone]
    resolved = resolve_input(args.input, args.id_root)
    rgb = FeatureSpec(
        name=RGB_KEY,
        backbone=args.backbone,
        weights=args.weights,
        seed=args.seed,
        frame_size=spec.input_size,
        fps=args.fps,
        pca=args.pca,
        dims=args.pca_dims or min(MAX_PCA_DIMS, spec.feature_dims),
        pca_sample_frames=args.pca_sample_frames,
    )
    specs = (rgb,)
    if AUDIO_KEY in args.streams:
        check_audio_weights(args.audio_weights, args.seed)
        specs += (
            audio_spec(
                weights=args.audio_weights,
                seed=args.seed,
                fps=args.fps,
                pca=args.audio_pca,
                dims=args.audio_pca_dims,
                pca_sample_frames=args.pca_sample_frames,
            ),
        )
    config = ExtractConfig(
        input=resolved.given,
        input_pattern=resolved.pattern,
        match_folder=resolved.is_folder,
        output=check_output(args.output),
        id_root=resolved.id_root,
        run_id=new_run_id(),
        specs=specs,
        max_frames=args.max_frames,
        frames_per_batch=args.frames_per_batch,
        labels_csv=check_file_flag("--labels", args.labels),
        labels_from_folders=args.labels_from_folders,
        vocabulary=check_file_flag("--vocabulary", args.vocabulary),
        num_shards=args.num_shards,
        skip_existing=args.skip_existing,
        lease_timeout_s=args.lease_timeout,
        break_lease=args.break_lease,
        beam_args=tuple(beam_args),
    )
    feature_dims = {name: s.feature_dims for name, s in backbones.BACKBONES.items()}
    config.validate({**feature_dims, VGGISH_BACKBONE: AUDIO_DIMS})
    return config


def check_audio_weights(weights: str, seed: int) -> None:
    """--audio_weights is checked before any work: `vggish` names where it looked and how to
    convert the checkpoint (nothing is downloaded); a gs:// file is checked by the job."""
    if storage.is_remote(weights):
        return
    from features.vggish import resolve_vggish_weights

    resolve_vggish_weights(weights, seed)


def run(
    config: ExtractConfig,
    pipeline: beam.Pipeline | None = None,
    faults: FaultPlan | None = None,
    wait: bool = True,
) -> beam.runners.runner.PipelineResult | None:
    """Runs one extraction (fitting the PCA first if needed) to its commit; returns the
    PipelineResult (None for a dry run). Tests pass their own pipeline and a FaultPlan; a
    Flex Template launcher passes wait=False and returns once the job is submitted (the job
    then gives the output's lease back at its commit)."""
    from pipelines.extract_job import execute

    return execute(config, pipeline, faults, wait)


def print_summary(output: str) -> None:
    from features.manifest import read_manifest

    manifest = read_manifest(storage.join(output, MANIFEST_FILE))
    counts = manifest.counts
    audio = any(stream.name == AUDIO_KEY for stream in manifest.streams)
    sound = f", {counts.no_audio} without audio" if audio else ""
    print(
        f"{PROG}: {counts.ok} of {counts.seen} videos ok, {counts.failed} failed, "
        f"{counts.frames} frames ({counts.truncated} videos truncated{sound})\n"
        f"  frame-level records: {storage.join(output, FRAME_DIR)}/\n"
        f"  video-level records: {storage.join(output, VIDEO_DIR)}/\n"
        f"  manifest:            {storage.join(output, MANIFEST_FILE)}"
    )
    if counts.failed:
        print(f"  failed inputs:       {storage.join(output, FAILED_PREFIX)}-*.jsonl")


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse(argv)
    quiet(args.verbose)
    state: dict[str, ExtractConfig] = {}

    def body() -> int:
        state["config"] = config = config_from_args(args, beam_args)
        if run(config) is not None:
            print_summary(config.output)
        return 0

    def left_behind() -> str:
        config = state.get("config")
        if config is None:
            return ""
        from pipelines.runs import run_manifest_path

        committed = storage.exists(run_manifest_path(config.output, config.run_id))
        return "" if committed else "nothing was committed; rerun to resume"

    return run_main(PROG, body, args.verbose, known_errors(), left_behind)


def known_errors() -> tuple[type[Exception], ...]:
    """Domain errors whose message names the thing to fix (imported lazily: they live in
    modules that import Keras)."""
    from features.backbones import BackboneError
    from features.labels import LabelError

    return (BackboneError, LabelError)


if __name__ == "__main__":
    sys.exit(main())
