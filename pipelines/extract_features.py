"""`extract_features`: videos -> 1 fps frames -> CNN -> PCA + 8-bit -> YouTube-8M TFRecords.

    extract_features --input videos/ --output features/ [--labels labels.csv] [Beam options]

Writes `<output>/frame/*.tfrecord` (SequenceExample: context id, labels; feature list rgb),
`<output>/video/*.tfrecord` (Example: id, labels, mean_rgb), `pca.npz`, `vocabulary.csv`,
`failed-*.jsonl` (one line per unreadable input) and, last, `manifest.json`.
"""

import argparse
import dataclasses
import hashlib
import io
import os
import secrets
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
    WorkerOptions,
)

from features import backbones, video_ids
from features.formats import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_PCA_SAMPLE_FRAMES,
    FAILED_PREFIX,
    FRAME_DIR,
    MANIFEST_FILE,
    MAX_PCA_DIMS,
    PCA_FILE,
    VIDEO_DIR,
)
from features.labels import LabelError, Vocabulary
from features.pca import PcaTransform, load_pca
from pipelines import manifest, runs, storage
from pipelines.config import ExtractConfig
from pipelines.extract_graph import build_pipeline
from pipelines.pca_fit import run_pca_fit


class UsageError(ValueError):
    """A flag or path that cannot work; reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extract_features",
        description=__doc__.split("\n\n")[0],
        epilog="Unrecognised flags are passed to Beam (e.g. --runner, --direct_num_workers).",
    )
    parser.add_argument("--input", required=True, help="video folder (recursive), glob or gs://")
    parser.add_argument("--output", required=True, help="output folder or gs:// prefix")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frames sampled per second")
    parser.add_argument(
        "--max_frames", type=int, default=DEFAULT_MAX_FRAMES, help="frames per video; 0 = no cap"
    )
    parser.add_argument(
        "--backbone", default=backbones.DEFAULT_BACKBONE, choices=sorted(backbones.BACKBONES)
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (from the Keras cache), random (seeded He init) or a weights file",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    parser.add_argument("--batch_size", type=int, default=32, help="frames per CNN batch")
    parser.add_argument(
        "--pca",
        default="auto",
        help="auto (reuse <output>/pca.npz, else fit), fit, or a pca.npz / YouTube-8M PCA folder",
    )
    parser.add_argument("--pca_dims", type=int, help="default: min(1024, backbone dims)")
    parser.add_argument("--pca_sample_frames", type=int, default=DEFAULT_PCA_SAMPLE_FRAMES)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", default="", help="CSV `id,labels` (names or indices, ;-sep)")
    labels.add_argument(
        "--labels_from_folders", action="store_true", help="label = the video's parent folder"
    )
    parser.add_argument("--vocabulary", default="", help="reuse this Index,Name vocabulary.csv")
    parser.add_argument("--id_root", default="", help="ids are paths relative to this folder")
    parser.add_argument("--num_shards", type=int, default=0, help="0 = let the runner decide")
    parser.add_argument(
        "--skip_existing",
        action="store_true",
        help="add to an output: process only videos not in a committed run",
    )
    return parser


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def resolve_input(input_arg: str, id_root_arg: str) -> tuple[str, bool, str]:
    """--input -> (pattern to match, whether it is a folder, id root)."""
    input_arg = storage.absolute(input_arg)
    storage.check_bucket(input_arg, "--input")
    if video_ids.has_wildcard(input_arg):
        pattern, is_folder, id_root = input_arg, False, video_ids.id_root_of(input_arg)
    elif video_ids.is_video_file(input_arg) and storage.exists(input_arg):
        pattern, is_folder, id_root = input_arg, False, input_arg.rsplit("/", 1)[0]
    else:
        pattern, is_folder, id_root = input_arg.rstrip("/") + "/**", True, input_arg.rstrip("/")
    if not storage.is_remote(input_arg) and not os.path.isdir(id_root):
        raise UsageError(f"--input {input_arg}: no such folder {id_root}")
    if id_root_arg:
        id_root = storage.absolute(id_root_arg)
        if not pattern.startswith(id_root.rstrip("/") + "/"):
            raise UsageError(f"--id_root {id_root_arg}: --input {input_arg} is not under it")
    return pattern, is_folder, id_root


def check_ranges(args: argparse.Namespace, feature_dims: int) -> int:
    """Validates numeric flags; returns the PCA dimensions to keep."""
    if args.fps <= 0:
        raise UsageError(f"--fps {args.fps}: must be > 0")
    if args.max_frames < 0:
        raise UsageError(f"--max_frames {args.max_frames}: must be >= 0 (0 = no cap)")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be >= 1")
    if args.num_shards < 0:
        raise UsageError(f"--num_shards {args.num_shards}: must be >= 0")
    if args.pca_sample_frames < 2:
        raise UsageError(f"--pca_sample_frames {args.pca_sample_frames}: must be >= 2")
    pca_dims = args.pca_dims or min(MAX_PCA_DIMS, feature_dims)
    if not 1 <= pca_dims <= feature_dims:
        raise UsageError(
            f"--pca_dims {pca_dims}: must be in 1..{feature_dims} ({args.backbone} features)"
        )
    return pca_dims


def load_vocabulary(path: str) -> Vocabulary:
    if not path:
        return Vocabulary(())
    if not storage.exists(path):
        raise UsageError(f"--vocabulary {path}: no such file")
    return Vocabulary.from_csv(storage.read_bytes(path).decode(), source=f"--vocabulary {path}")


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    spec = backbones.BACKBONES[args.backbone]
    pca_dims = check_ranges(args, spec.feature_dims)
    pattern, is_folder, id_root = resolve_input(args.input, args.id_root)
    if args.labels and not storage.exists(args.labels):
        raise UsageError(f"--labels {args.labels}: no such file")
    output = storage.absolute(args.output)
    storage.check_bucket(output, "--output")
    return ExtractConfig(
        input_pattern=pattern,
        match_folder=is_folder,
        output=output,
        id_root=id_root,
        run_id=new_run_id(),
        fps=args.fps,
        max_frames=args.max_frames,
        backbone=args.backbone,
        weights=args.weights,
        seed=args.seed,
        batch_size=args.batch_size,
        pca=args.pca,
        pca_dims=pca_dims,
        pca_sample_frames=args.pca_sample_frames,
        labels_csv=args.labels,
        labels_from_folders=args.labels_from_folders,
        vocabulary=args.vocabulary,
        num_shards=args.num_shards,
        skip_existing=args.skip_existing,
    )


def prepare_pca(
    config: ExtractConfig, options: PipelineOptions, frame_size: tuple[int, int]
) -> tuple[PcaTransform, str, int, str]:
    """Loads, reuses or fits the PCA and leaves it at <output>/pca.npz.

    Returns the PCA, where it came from (fit | reused | --pca PATH), the frames it was
    fitted on by this run (0 unless fitted) and the sha256 of pca.npz."""
    output_pca = storage.join(config.output, PCA_FILE)
    feature_dims = backbones.BACKBONES[config.backbone].feature_dims
    sample_frames = 0
    if config.pca == "fit" or (config.pca == "auto" and not storage.exists(output_pca)):
        pca, sample_frames = run_pca_fit(config, options, frame_size)
        source = "fit"
    elif config.pca == "auto":
        pca = PcaTransform.load_npz(io.BytesIO(storage.read_bytes(output_pca)))
        source = "reused"
    elif storage.is_remote(config.pca):
        if not storage.exists(config.pca):
            raise UsageError(f"--pca {config.pca}: no such pca.npz (or use auto / fit)")
        pca = PcaTransform.load_npz(io.BytesIO(storage.read_bytes(config.pca)))
        source = config.pca
    else:
        if not os.path.exists(config.pca):
            raise UsageError(f"--pca {config.pca}: no such file or folder (or use auto / fit)")
        pca = load_pca(config.pca)
        source = config.pca
    if pca.input_dims != feature_dims:
        raise UsageError(
            f"--pca {config.pca}: PCA expects {pca.input_dims}-d features, "
            f"{config.backbone} gives {feature_dims}"
        )
    if source not in ("fit", "reused"):
        buffer = io.BytesIO()
        pca.save(buffer)
        storage.write_bytes(output_pca, buffer.getvalue())
    sha256 = hashlib.sha256(storage.read_bytes(output_pca)).hexdigest()
    return pca, source, sample_frames, sha256


def check_compatible(config: ExtractConfig, committed: list, weights, pca_sha256: str) -> None:
    """--skip_existing adds to an output only in the same feature space and id scheme."""
    latest = committed[-1]
    same_weights = (latest.weights.kind, latest.weights.sha256, latest.weights.seed) == (
        weights.kind,
        weights.sha256,
        weights.seed or 0,
    )
    mismatches = [
        name
        for name, differs in (
            ("id root", latest.id_root != config.id_root),
            ("backbone", latest.backbone != config.backbone or not same_weights),
            ("PCA", latest.pca.sha256 != pca_sha256),
            ("fps", latest.fps != config.fps),
        )
        if differs
    ]
    if mismatches:
        raise UsageError(
            f"--skip_existing: this run's {', '.join(mismatches)} differs from the committed "
            f"runs in {config.output}; use a new --output"
        )


def run(
    argv: list[str] | None = None, save_main_session: bool = True
) -> beam.runners.runner.PipelineResult:
    """Parses flags, prepares the PCA (fitting it first if needed) and runs the job.

    Raises UsageError (or BackboneError / LabelError) for flags that cannot work.
    """
    args, beam_args = build_parser().parse_known_args(argv)
    storage.skip_credentials_lookup_for_emulator()
    config = config_from_args(args)
    weights = backbones.resolve_weights(
        config.backbone, storage.stage_locally(config.weights), config.seed
    )
    if storage.is_remote(config.weights):
        weights = dataclasses.replace(weights, path=config.weights)
    given_vocabulary = load_vocabulary(config.vocabulary)
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    committed = runs.committed_runs(config.output)
    if committed and not config.skip_existing:
        raise UsageError(
            f"--output {config.output}: holds {len(committed)} committed run(s); pass "
            "--skip_existing to add new videos to it, or choose another --output"
        )
    spec = backbones.BACKBONES[config.backbone]
    dry_run = options.view_as(TestOptions).dry_run
    pca_dims, pca_epsilon = (spec.feature_dims, config.pca_dims), 0.0
    pca_source, pca_sample_frames, pca_sha256 = "dry run", 0, ""
    if dry_run:
        print(describe_job(config, options))
    else:
        moved = runs.set_aside_uncommitted(config.output, {run.run_id for run in committed})
        if moved:
            print(f"extract_features: set aside {len(moved)} shard(s) of unfinished runs")
        pca, pca_source, pca_sample_frames, pca_sha256 = prepare_pca(
            config, options, spec.input_size
        )
        if committed:
            check_compatible(config, committed, weights, pca_sha256)
        pca_dims, pca_epsilon = (pca.input_dims, pca.output_dims), pca.epsilon
    manifest_parts = {
        "pca_dims": pca_dims,
        "pca_epsilon": pca_epsilon,
        "weights": weights,
        "frame_size": spec.input_size,
        "pca_source": pca_source,
        "pca_sample_frames": pca_sample_frames,
        "pca_sha256": pca_sha256,
    }
    done_ids_files = [
        storage.join(config.output, path) for run in committed for path in run.ok_ids_files
    ]
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, manifest_parts, given_vocabulary, done_ids_files)
    return pipeline.run()


def describe_job(config: ExtractConfig, options: PipelineOptions) -> str:
    """The runner, worker and GPU settings a dry run would submit."""
    workers = options.view_as(WorkerOptions)
    cloud = options.view_as(GoogleCloudOptions)
    lines = [
        f"runner:              {options.view_as(StandardOptions).runner or 'DirectRunner'}",
        f"project / region:    {cloud.project} / {cloud.region}",
        f"input:               {config.input_pattern}",
        f"output:              {config.output}",
        f"machine type:        {workers.machine_type}",
        f"workers:             {workers.num_workers} initial, {workers.max_num_workers} max",
        f"service options:     {cloud.dataflow_service_options}",
        f"container image:     {workers.sdk_container_image}",
        f"harness threads:     {options.view_as(DebugOptions).number_of_worker_harness_threads}",
        f"experiments:         {options.view_as(DebugOptions).experiments}",
        f"backbone:            {config.backbone} ({config.weights}), batch {config.batch_size}",
    ]
    if config.pca == "fit" or (config.pca == "auto" and not storage.exists(
        storage.join(config.output, PCA_FILE)
    )):  # fmt: skip
        lines.append("pca:                 would be fitted by a first job (not built here)")
    return "dry run: the job is built and validated, not submitted\n  " + "\n  ".join(lines)


def print_summary(output: str) -> None:
    written = manifest.read_manifest(storage.join(output, MANIFEST_FILE))
    counts = written.counts
    print(
        f"extract_features: {counts.ok} of {counts.seen} videos ok, {counts.failed} failed, "
        f"{counts.frames} frames ({counts.truncated} videos truncated)\n"
        f"  frame-level records: {storage.join(output, FRAME_DIR)}/\n"
        f"  video-level records: {storage.join(output, VIDEO_DIR)}/\n"
        f"  manifest:            {storage.join(output, MANIFEST_FILE)}"
    )
    if counts.failed:
        print(f"  failed inputs:       {storage.join(output, FAILED_PREFIX)}-*.jsonl")


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    dry_run = PipelineOptions(beam_args).view_as(TestOptions).dry_run
    try:
        run(argv).wait_until_finish()
    except (UsageError, LabelError, backbones.BackboneError, FileNotFoundError) as error:
        print(f"extract_features: error: {error}", file=sys.stderr)
        return 2
    if not dry_run:
        print_summary(storage.absolute(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
