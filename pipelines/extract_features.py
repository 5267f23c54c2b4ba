"""`extract_features`: videos -> 1 fps frames -> CNN -> PCA + 8-bit -> YouTube-8M TFRecords.

    extract_features --input videos/ --output features/ [--labels labels.csv] [Beam options]

Writes `<output>/frame/*.tfrecord` (SequenceExample: context id, labels; feature list rgb),
`<output>/video/*.tfrecord` (Example: id, labels, mean_rgb), `pca.npz`, `vocabulary.csv`,
`failed-*.jsonl` (one line per unreadable input) and, last, `manifest.json`.
"""

import argparse
import io
import os
import secrets
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from features import backbones, video_ids
from features.formats import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_PCA_SAMPLE_FRAMES,
    FAILED_PREFIX,
    FRAME_DIR,
    MAX_PCA_DIMS,
    PCA_FILE,
    RECORD_SUFFIX,
    VIDEO_DIR,
    VOCABULARY_FILE,
)
from features.labels import LabelError, Vocabulary
from features.pca import PcaTransform, load_pca
from pipelines import manifest, storage
from pipelines.config import ExtractConfig
from pipelines.pca_fit import run_pca_fit
from pipelines.transforms import (
    COUNTS,
    FAILED,
    SUMMARY,
    VIDEO_LEVEL,
    AssembleVideo,
    EmbedVideos,
    JoinLabels,
    KeepFirstPath,
    MatchVideos,
    failure_counts,
    quantize_chunk,
    read_label_rows,
)


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
    return parser


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def resolve_input(input_arg: str, id_root_arg: str) -> tuple[str, bool, str]:
    """--input -> (pattern to match, whether it is a folder, id root)."""
    is_local = "://" not in input_arg
    if is_local:
        input_arg = os.path.abspath(input_arg)
    if video_ids.has_wildcard(input_arg):
        pattern, is_folder, id_root = input_arg, False, video_ids.id_root_of(input_arg)
    elif is_local and os.path.isfile(input_arg):
        pattern, is_folder, id_root = input_arg, False, os.path.dirname(input_arg)
    else:
        pattern, is_folder, id_root = input_arg.rstrip("/") + "/**", True, input_arg.rstrip("/")
    if is_local and not os.path.isdir(id_root):
        raise UsageError(f"--input {input_arg}: no such folder {id_root}")
    if id_root_arg:
        id_root = os.path.abspath(id_root_arg) if "://" not in id_root_arg else id_root_arg
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
    output = args.output if "://" in args.output else os.path.abspath(args.output)
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
    )


def prepare_pca(
    config: ExtractConfig, options: PipelineOptions, frame_size: tuple[int, int]
) -> tuple[PcaTransform, str, int]:
    """Loads, reuses or fits the PCA and leaves it at <output>/pca.npz.

    Returns the PCA, where it came from (fit | reused | --pca PATH) and the frames it was
    fitted on by this run (0 unless fitted)."""
    output_pca = storage.join(config.output, PCA_FILE)
    feature_dims = backbones.BACKBONES[config.backbone].feature_dims
    sample_frames = 0
    if config.pca == "fit" or (config.pca == "auto" and not storage.exists(output_pca)):
        pca, sample_frames = run_pca_fit(config, options, frame_size)
        source = "fit"
    elif config.pca == "auto":
        pca = PcaTransform.load_npz(io.BytesIO(storage.read_bytes(output_pca)))
        source = "reused"
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
    if source != "fit":
        buffer = io.BytesIO()
        pca.save(buffer)
        storage.write_bytes(output_pca, buffer.getvalue())
    return pca, source, sample_frames


def build_pipeline(
    pipeline: beam.Pipeline,
    config: ExtractConfig,
    pca: PcaTransform,
    manifest_parts: dict,
    given_vocabulary: Vocabulary,
) -> None:
    """Adds the extraction steps to `pipeline`; `manifest_parts` are build_manifest's
    run-independent arguments (weights, frame_size, pca_source, pca_sample_frames)."""
    keyed_paths = pipeline | "Match" >> MatchVideos(config)
    unique = (
        keyed_paths
        | "GroupById" >> beam.GroupByKey()
        | "KeepFirstPath" >> beam.ParDo(KeepFirstPath()).with_outputs(FAILED, main="unique")
    )
    if config.labels_csv:
        label_rows = read_label_rows(pipeline, config.labels_csv)
    elif config.labels_from_folders:
        label_rows = unique.unique | "FolderLabels" >> beam.MapTuple(
            lambda video_id, path: (video_id, [video_ids.folder_label(path)])
        )
    else:
        label_rows = pipeline | "NoLabels" >> beam.Create([])
    if len(given_vocabulary):
        vocabulary = pipeline | "GivenVocabulary" >> beam.Create([given_vocabulary])
    else:
        vocabulary = (
            label_rows
            | "LabelNames"
            >> beam.FlatMap(lambda row: [token for token in row[1] if not token.isdigit()])
            | "DistinctNames" >> beam.Distinct()
            | "AllNames" >> beam.combiners.ToList()
            | "Vocabulary" >> beam.Map(Vocabulary.from_names)
        )
    labeled = (
        {"paths": unique.unique, "rows": label_rows}
        | "JoinLabels" >> beam.CoGroupByKey()
        | "ResolveLabels"
        >> beam.ParDo(JoinLabels(), beam.pvalue.AsSingleton(vocabulary)).with_outputs(
            FAILED, COUNTS, main="videos"
        )
    )
    frame_size = manifest_parts["frame_size"]
    embedded, summaries, decode_failures = labeled.videos | "Embed" >> EmbedVideos(
        config, frame_size
    )
    assembled = (
        {"chunks": embedded | "Quantize" >> beam.Map(quantize_chunk, pca), SUMMARY: summaries}
        | "JoinChunks" >> beam.CoGroupByKey()
        | "Assemble" >> beam.ParDo(AssembleVideo()).with_outputs(VIDEO_LEVEL, COUNTS, main="frame")
    )
    shards = {"num_shards": config.num_shards, "file_name_suffix": RECORD_SUFFIX}
    written = {
        "frame_records": assembled.frame
        | "WriteFrames"
        >> beam.io.WriteToTFRecord(storage.join(config.output, FRAME_DIR, config.run_id), **shards),
        "video_records": assembled[VIDEO_LEVEL]
        | "WriteVideos"
        >> beam.io.WriteToTFRecord(storage.join(config.output, VIDEO_DIR, config.run_id), **shards),
    }
    failures = (
        unique[FAILED],
        labeled[FAILED],
        decode_failures,
    ) | "AllFailures" >> beam.Flatten()
    written["failed_records"] = (
        failures
        | "FailureJson" >> beam.Map(lambda failure: failure.to_json_line(config.run_id))
        | "WriteFailures"
        >> beam.io.WriteToText(
            storage.join(config.output, f"{FAILED_PREFIX}-{config.run_id}"),
            file_name_suffix=".jsonl",
            num_shards=1,
        )
    )
    counts = (
        (
            keyed_paths | "CountSeen" >> beam.Map(lambda _: ("seen", 1)),
            failures | "CountFailures" >> beam.FlatMap(failure_counts),
            labeled[COUNTS],
            assembled[COUNTS],
        )
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountsDict" >> beam.combiners.ToDict()
    )
    _ = vocabulary | "WriteVocabulary" >> beam.Map(write_vocabulary, config.output)
    written_lists = {key: beam.pvalue.AsList(files) for key, files in written.items()}
    _ = counts | "WriteManifest" >> beam.Map(
        write_manifest_step,
        config=config,
        pca=pca,
        manifest_parts=manifest_parts,
        vocabulary=beam.pvalue.AsSingleton(vocabulary),
        **written_lists,
    )


def write_vocabulary(vocabulary: Vocabulary, output: str) -> None:
    if len(vocabulary):
        storage.write_bytes(storage.join(output, VOCABULARY_FILE), vocabulary.to_csv().encode())


def write_manifest_step(
    counts: dict,
    config: ExtractConfig,
    pca: PcaTransform,
    manifest_parts: dict,
    vocabulary: Vocabulary,
    **written: list[str],
) -> None:
    built = manifest.build_manifest(
        config, pca=pca, counts=counts, vocabulary=vocabulary, written=written, **manifest_parts
    )
    manifest.write_manifest(config.output, built)


def run(
    argv: list[str] | None = None, save_main_session: bool = True
) -> beam.runners.runner.PipelineResult:
    """Parses flags, prepares the PCA (fitting it first if needed) and runs the job.

    Raises UsageError (or BackboneError / LabelError) for flags that cannot work.
    """
    args, beam_args = build_parser().parse_known_args(argv)
    config = config_from_args(args)
    weights = backbones.resolve_weights(config.backbone, config.weights, config.seed)
    given_vocabulary = load_vocabulary(config.vocabulary)
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    frame_size = backbones.BACKBONES[config.backbone].input_size
    pca, pca_source, pca_sample_frames = prepare_pca(config, options, frame_size)
    manifest_parts = {
        "weights": weights,
        "frame_size": frame_size,
        "pca_source": pca_source,
        "pca_sample_frames": pca_sample_frames,
    }
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, pca, manifest_parts, given_vocabulary)
    return pipeline.run()


def print_summary(output: str) -> None:
    written = manifest.read_manifest(storage.join(output, manifest.MANIFEST_FILE))
    counts = written.counts
    print(
        f"extract_features: {counts.ok} of {counts.seen} videos ok, {counts.failed} failed, "
        f"{counts.frames} frames ({counts.truncated} videos truncated)\n"
        f"  frame-level records: {storage.join(output, FRAME_DIR)}/\n"
        f"  video-level records: {storage.join(output, VIDEO_DIR)}/\n"
        f"  manifest:            {storage.join(output, manifest.MANIFEST_FILE)}"
    )
    if counts.failed:
        print(f"  failed inputs:       {storage.join(output, FAILED_PREFIX)}-*.jsonl")


def main(argv: list[str] | None = None) -> int:
    args, _ = build_parser().parse_known_args(argv)
    try:
        run(argv).wait_until_finish()
    except (UsageError, LabelError, backbones.BackboneError) as error:
        print(f"extract_features: error: {error}", file=sys.stderr)
        return 2
    print_summary(args.output if "://" in args.output else os.path.abspath(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
