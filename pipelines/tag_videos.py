"""`tag_videos`: tag a video library (raw videos or frame-level TFRecords) with a model.

    tag_videos --model model/ --input videos/ --output tags/ [--top_k 5] [Beam options]

Writes `<output>/tags.parquet` + `tags.csv` (id, path, rank, label_index, label_name, score),
`segments.parquet` (id, start_s, end_s, label_index, label_name, score), `predictions.csv`
(Kaggle VideoId,LabelConfidencePairs), `failed-*.jsonl`, `tagging.json` and
`report/index.html`.
"""

import argparse
import json
import os
import sys
import tempfile

import apache_beam as beam
import pyarrow
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from features import backbones
from features.formats import MANIFEST_FILE, PCA_FILE, RECORD_SUFFIX, VOCABULARY_FILE
from features.labels import Vocabulary
from pipelines import report, storage
from pipelines.config import ExtractConfig
from pipelines.elements import VideoInput
from pipelines.extract_features import UsageError, new_run_id, resolve_input
from pipelines.tagging_steps import (
    PREDICTIONS,
    SEGMENTS,
    TagSettings,
    TagVideo,
    collect_frames,
    csv_line,
    record_video,
)
from pipelines.transforms import (
    COUNTS,
    FAILED,
    SUMMARY,
    EmbedVideos,
    KeepFirstPath,
    MatchVideos,
    WhitenAndQuantize,
    count_outcomes,
    write_failures,
)
from pooling_models import model_dir, staging

TAG_SCHEMA = pyarrow.schema(
    [
        ("id", pyarrow.string()),
        ("path", pyarrow.string()),
        ("rank", pyarrow.int32()),
        ("label_index", pyarrow.int32()),
        ("label_name", pyarrow.string()),
        ("score", pyarrow.float32()),
    ]
)
SEGMENT_SCHEMA = pyarrow.schema(
    [
        ("id", pyarrow.string()),
        ("start_s", pyarrow.float64()),
        ("end_s", pyarrow.float64()),
        ("label_index", pyarrow.int32()),
        ("label_name", pyarrow.string()),
        ("score", pyarrow.float32()),
    ]
)
SUMMARY_FILE = "tagging.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tag_videos",
        description=__doc__.split("\n\n")[0],
        epilog="Unrecognised flags are passed to Beam (e.g. --runner, --direct_num_workers).",
    )
    parser.add_argument("--model", required=True, help="a train_pool model directory")
    parser.add_argument("--input", required=True, help="videos (folder, glob, gs://) or *.tfrecord")
    parser.add_argument("--output", required=True, help="folder for tags, segments and report")
    parser.add_argument("--top_k", type=int, default=5, help="tags per video and per segment")
    parser.add_argument("--min_score", type=float, default=0.0, help="drop tags below this")
    parser.add_argument("--segment_seconds", type=float, default=5.0)
    parser.add_argument("--smooth", type=int, default=3, help="segments in the rolling mean")
    parser.add_argument("--batch_size", type=int, default=32, help="frames per CNN batch")
    return parser


def is_record_input(pattern: str) -> bool:
    """`features/frame/*.tfrecord` and the like are records; anything else names videos."""
    return RECORD_SUFFIX in pattern


def check_flags(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise UsageError(f"--top_k {args.top_k}: must be >= 1")
    if args.segment_seconds <= 0:
        raise UsageError(f"--segment_seconds {args.segment_seconds}: must be > 0")
    if args.smooth < 1:
        raise UsageError(f"--smooth {args.smooth}: must be >= 1")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be >= 1")


def check_manifest(model: str, train_config: model_dir.TrainConfig, manifest: dict) -> None:
    """Raw videos need the model dir's features manifest, matching the model's input."""
    if not train_config.raw_video_tagging or not manifest:
        raise UsageError(
            f"--model {model}: has no manifest.json ({train_config.note or 'not copied'}); "
            "it can tag frame-level TFRecords, not raw videos"
        )
    pca_dims = int(manifest.get("pca", {}).get("output_dims", 0))
    model_dims = train_config.model.feature_sizes[0]
    if pca_dims != model_dims:
        raise UsageError(
            f"--model {model}: its manifest's PCA gives {pca_dims}-d features, "
            f"the model takes {model_dims}"
        )
    if manifest["backbone"] not in backbones.BACKBONES:
        raise UsageError(f"--model {model}: unknown backbone {manifest['backbone']!r}")


def weights_flag(manifest: dict) -> str:
    """The --weights value that rebuilds the manifest's backbone weights."""
    weights = manifest.get("weights", {})
    kind = weights.get("kind", "random")
    return weights["path"] if kind == "path" else kind


def extract_config(args: argparse.Namespace, manifest: dict, run_id: str) -> ExtractConfig:
    pattern, is_folder, id_root = resolve_input(args.input, "")
    return ExtractConfig(
        input_pattern=pattern,
        match_folder=is_folder,
        output=args.output,
        id_root=id_root,
        run_id=run_id,
        fps=float(manifest.get("fps", 1.0)),
        max_frames=0,  # tag the whole video
        backbone=manifest["backbone"],
        weights=weights_flag(manifest),
        seed=int(manifest.get("weights", {}).get("seed", 0)),
        batch_size=args.batch_size,
        pca=os.path.join(args.model, PCA_FILE),
        pca_dims=int(manifest["pca"]["output_dims"]),
        pca_sample_frames=2,
    )


def label_names(model: str) -> tuple[str, ...]:
    path = os.path.join(model, VOCABULARY_FILE)
    if not os.path.isfile(path):
        return ()
    with open(path) as vocabulary_file:
        return Vocabulary.from_csv(vocabulary_file.read(), source=path).names


def videos_from_files(pipeline: beam.Pipeline, config: ExtractConfig, pca_path: str):
    """Raw videos -> (TaggableVideo collection, failure collections, matched files)."""
    matched = pipeline | "Match" >> MatchVideos(config)
    unique = (
        matched
        | "GroupById" >> beam.GroupByKey()
        | "KeepFirstPath" >> beam.ParDo(KeepFirstPath()).with_outputs(FAILED, main="unique")
    )
    inputs = unique.unique | "ToInput" >> beam.MapTuple(
        lambda video_id, path: VideoInput(video_id, path, (), False)
    )
    frame_size = backbones.BACKBONES[config.backbone].input_size
    embedded, summaries, decode_failures = inputs | "Embed" >> EmbedVideos(
        config, frame_size, keep_thumbnails=True
    )
    videos = (
        {
            "chunks": embedded | "Quantize" >> beam.ParDo(WhitenAndQuantize(pca_path)),
            SUMMARY: summaries,
        }
        | "JoinChunks" >> beam.CoGroupByKey()
        | "CollectFrames" >> beam.FlatMap(collect_frames)
    )
    return videos, [unique[FAILED], decode_failures], matched


def write_rows(rows, name: str, schema: pyarrow.Schema, output: str, csv_header: bool) -> None:
    """One `<output>/<name>.parquet` (and `.csv`) file: a library's tags are small."""
    single = {"num_shards": 1, "shard_name_template": ""}
    _ = rows | f"Write{name}Parquet" >> beam.io.WriteToParquet(
        storage.join(output, name), schema, file_name_suffix=".parquet", **single
    )
    if csv_header:
        _ = (
            rows
            | f"{name}CsvLine" >> beam.Map(lambda row: csv_line([row[f] for f in schema.names]))
            | f"Write{name}Csv"
            >> beam.io.WriteToText(
                storage.join(output, name),
                file_name_suffix=".csv",
                header=",".join(schema.names),
                **single,
            )
        )


def run(argv: list[str] | None = None, save_main_session: bool = True):
    """Checks the model and flags, then runs the tagging job; returns its PipelineResult."""
    args, beam_args = build_parser().parse_known_args(argv)
    check_flags(args)
    storage.skip_credentials_lookup_for_emulator()
    model_url = storage.absolute(args.model)
    args.model = staging.local_dir_for(model_url)
    train_config = model_dir.read_train_config(args.model)
    if train_config.model.data_level != "frame":
        raise UsageError(f"--model {model_url}: a video-level model cannot tag frame features")
    args.output = storage.absolute(args.output)
    storage.check_bucket(args.output, "--output")
    run_id = new_run_id()
    manifest_path = os.path.join(args.model, MANIFEST_FILE)
    manifest = model_dir.read_manifest_dict(manifest_path) if os.path.isfile(manifest_path) else {}
    settings = TagSettings(
        model_dir=model_url,
        output=args.output,
        fps=float(manifest.get("fps", 1.0)),
        max_frames=train_config.max_frames,
        top_k=args.top_k,
        min_score=args.min_score,
        segment_seconds=args.segment_seconds,
        smooth=args.smooth,
        label_names=label_names(args.model),
    )
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    pipeline = beam.Pipeline(options=options)
    if is_record_input(args.input):
        seen = pipeline | "ReadRecords" >> beam.io.ReadFromTFRecord(args.input)
        videos = seen | "DecodeRecords" >> beam.Map(record_video)
        failure_parts = []
    else:
        check_manifest(model_url, train_config, manifest)
        config = extract_config(args, manifest, run_id)
        backbones.resolve_weights(
            config.backbone, storage.stage_locally(config.weights), config.seed
        )
        pca_path = storage.join(model_url, PCA_FILE)  # read by the workers
        videos, failure_parts, seen = videos_from_files(pipeline, config, pca_path)
    tagged = videos | "Tag" >> beam.ParDo(
        TagVideo(settings, train_config.model.feature_sizes[0])
    ).with_outputs(SEGMENTS, PREDICTIONS, FAILED, COUNTS, main="tags")
    write_rows(tagged.tags, "tags", TAG_SCHEMA, args.output, csv_header=True)
    write_rows(tagged[SEGMENTS], "segments", SEGMENT_SCHEMA, args.output, csv_header=False)
    _ = tagged[PREDICTIONS] | "WritePredictions" >> beam.io.WriteToText(
        storage.join(args.output, "predictions"),
        file_name_suffix=".csv",
        header="VideoId,LabelConfidencePairs",
        num_shards=1,
        shard_name_template="",
    )
    failures = [*failure_parts, tagged[FAILED]] | "AllFailures" >> beam.Flatten()
    _ = write_failures(failures, args.output, run_id)
    counts = count_outcomes(seen, failures, tagged[COUNTS])
    summary = {"run_id": run_id, "model": args.model, "input": args.input, "top_k": args.top_k}
    summary.update(min_score=args.min_score, segment_seconds=args.segment_seconds)
    summary["smooth"] = args.smooth
    _ = counts | "WriteSummary" >> beam.Map(write_summary, args.output, summary)
    return pipeline.run()


def write_summary(counts: dict, output: str, summary: dict) -> None:
    counts = {"seen": 0, "tagged": 0, "failed": 0, **counts}
    body = json.dumps({**summary, "counts": counts}, indent=2, sort_keys=True) + "\n"
    storage.write_bytes(storage.join(output, SUMMARY_FILE), body.encode())


def write_report_anywhere(output: str) -> str:
    """The report is built from local files; for a bucket, from copies, then uploaded."""
    if not storage.is_remote(output):
        return report.write_report(output)
    with tempfile.TemporaryDirectory() as local:
        names = ["tags.parquet", "segments.parquet"]
        names += [
            path.rsplit("/", 1)[1] for path in storage.match(storage.join(output, "failed-*"))
        ]
        for name in names:
            if storage.exists(storage.join(output, name)):
                with open(os.path.join(local, name), "wb") as copy:
                    copy.write(storage.read_bytes(storage.join(output, name)))
        with open(report.write_report(local), "rb") as page:
            remote_page = storage.join(output, report.REPORT_DIR, "index.html")
            storage.write_bytes(remote_page, page.read())
    return remote_page


def main(argv: list[str] | None = None) -> int:
    args, _ = build_parser().parse_known_args(argv)
    try:
        run(argv).wait_until_finish()
    except (
        UsageError,
        model_dir.ModelDirError,
        backbones.BackboneError,
        FileNotFoundError,
    ) as error:
        print(f"tag_videos: error: {error}", file=sys.stderr)
        return 2
    output = storage.absolute(args.output)
    counts = json.loads(storage.read_bytes(storage.join(output, SUMMARY_FILE)))["counts"]
    tagged, seen, failed = counts["tagged"], counts["seen"], counts["failed"]
    print(f"tag_videos: {tagged} of {seen} videos tagged, {failed} failed")
    print(f"  tags:     {storage.join(output, 'tags.csv')} (and tags.parquet, segments.parquet)")
    print(f"  report:   {write_report_anywhere(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
