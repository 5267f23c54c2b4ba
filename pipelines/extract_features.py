"""`extract_features`: videos -> 1 fps frames -> CNN -> PCA + 8-bit -> YouTube-8M TFRecords.

    extract_features --input videos/ --output features/ [--labels labels.csv] [Beam options]

Writes `<output>/frame/*.tfrecord` (SequenceExample: context id, labels, has_audio; one
feature list per stream: rgb, audio and any of flow, i3d, c3d, fovea), `<output>/video/
*.tfrecord` (Example: id, labels, has_audio, mean_<stream>), one PCA per stream (`pca.npz`,
`<stream>_pca.npz`), `vocabulary.csv`, `failed-*.jsonl` (one line per input without
features) and, last, `manifest.json`. `--streams rgb` writes rgb only (no audio keys, no
has_audio), as YouTube-8M's starter extractor's records.

Flags are parsed and checked before TensorFlow or Beam is imported: `--help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
import time
from typing import TYPE_CHECKING

from features import storage
from features.cli import Parser, UsageError, quiet, run_main
from features.formats import (
    AUDIO_DIMS,
    AUDIO_KEY,
    C3D_BACKBONE,
    C3D_DIMS,
    C3D_FEATURE_DIMS,
    C3D_KEY,
    FAILED_PREFIX,
    FLOW_KEY,
    FRAME_DIR,
    I3D_KEY,
    MANIFEST_FILE,
    MAX_PCA_DIMS,
    RGB_KEY,
    VGGISH_BACKBONE,
    VIDEO_DIR,
)
from features.streams import FeatureSpec, audio_spec
from pipelines import extract_flags
from pipelines.compute_flags import (
    JIT_SETTINGS,
    check_precision_here,
    resolve_frames_per_batch,
    with_decode_workers,
)
from pipelines.config import ExtractConfig, FaultPlan, check_decode_device
from pipelines.inputs import resolve_input

if TYPE_CHECKING:
    import apache_beam as beam

PROG = extract_flags.PROG


def build_parser() -> Parser:
    return extract_flags.build_parser(__doc__.split("\n\n")[0])


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

    resolved = resolve_input(args.input, args.id_root)
    check_decode_device(args.decode_device, beam_args)
    check_precision_here(args.precision, beam_args)
    specs = stream_specs(args)
    config = ExtractConfig(
        input=resolved.given,
        input_pattern=resolved.pattern,
        match_folder=resolved.is_folder,
        output=check_output(args.output),
        id_root=resolved.id_root,
        run_id=new_run_id(),
        specs=specs,
        max_frames=args.max_frames,
        frames_per_batch=resolve_frames_per_batch(args.frames_per_batch, specs[0], beam_args),
        labels_csv=check_file_flag("--labels", args.labels),
        labels_from_folders=args.labels_from_folders,
        vocabulary=check_file_flag("--vocabulary", args.vocabulary),
        num_shards=args.num_shards,
        skip_existing=args.skip_existing,
        lease_timeout_s=args.lease_timeout,
        break_lease=args.break_lease,
        beam_args=with_decode_workers(args.decode_workers, beam_args),
    )
    feature_dims = {name: s.feature_dims for name, s in backbones.BACKBONES.items()}
    config.validate({**feature_dims, VGGISH_BACKBONE: AUDIO_DIMS, C3D_BACKBONE: C3D_FEATURE_DIMS})
    return config


def stream_specs(args: argparse.Namespace) -> tuple[FeatureSpec, ...]:
    """One FeatureSpec per --streams name, rgb first (reads the backbone registry), each
    decoded as --decode and --decode_device say, and computed at --precision."""
    return tuple(
        dataclasses.replace(
            spec,
            decode=args.decode,
            decode_device=args.decode_device,
            precision=args.precision,
            jit_compile=JIT_SETTINGS[args.jit_compile],
        )
        for spec in _network_specs(args)
    )


def _network_specs(args: argparse.Namespace) -> list[FeatureSpec]:
    from features import stream_models

    specs = []
    for name in args.streams:
        if name == AUDIO_KEY:
            check_audio_weights(args.audio_weights, args.seed)
            specs.append(
                audio_spec(
                    weights=args.audio_weights,
                    seed=args.seed,
                    fps=args.fps,
                    pca=args.audio_pca,
                    dims=args.audio_pca_dims,
                    pca_sample_frames=args.pca_sample_frames,
                )
            )
            continue
        backbone, weights = visual_network(name, args)
        frame_size = stream_models.stream_input_shape(name, backbone)[-3:-1]
        network_dims = stream_models.stream_feature_dims(name, backbone)
        prefix = "" if name == RGB_KEY else f"{name}_"
        default_dims = C3D_DIMS if name == C3D_KEY else min(MAX_PCA_DIMS, network_dims)
        specs.append(
            FeatureSpec(
                name=name,
                backbone=backbone,
                weights=weights,
                seed=args.seed,
                frame_size=frame_size,
                fps=args.fps,
                pca=getattr(args, f"{prefix}pca"),
                dims=getattr(args, f"{prefix}pca_dims") or default_dims,
                pca_sample_frames=args.pca_sample_frames,
            )
        )
    return specs


def visual_network(name: str, args: argparse.Namespace) -> tuple[str, str]:
    """(backbone, --weights value) of a picture stream: rgb and fovea share --backbone and
    --weights; flow adapts --backbone; i3d inflates --i3d_backbone; c3d is C3D."""
    if name == FLOW_KEY:
        return args.backbone, args.flow_weights
    if name == I3D_KEY:
        return args.i3d_backbone or args.backbone, args.i3d_weights
    if name == C3D_KEY:
        if not args.c3d_weights:
            raise UsageError(
                "the c3d stream has no default weights (no Sports-1M file ships with Keras)",
                "--c3d_weights",
                "pass a C3D .weights.h5 file, or random (seeded: tests and smoke runs)",
            )
        return C3D_BACKBONE, args.c3d_weights
    return args.backbone, args.weights


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
    quiet(args.verbose, PROG)
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
