"""tag_videos' job: read frame-level records or embed raw videos, score each video and its
segments, and write every output whole into the run's staging folder."""

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from features import records, storage
from features.cli import UsageError
from features.quantize import dequantize
from features.streams import FeatureSpec
from pipelines import decode_embed, progress, report, tagging_outputs, tagging_records
from pipelines.config import FaultPlan
from pipelines.elements import EmbeddedVideo, Failure
from pipelines.model_handler import NAMESPACE
from pipelines.tagging_plan import TaggingInputs
from pooling_models import tagging

FAILED = "failed"
COUNTS = "counts"
SEGMENTS = "segments"
PREDICTIONS = "predictions"
TOP_SCORE = "top_score"
TAG_ERROR = "tag_error"  # the pooling model failed on this video
PREDICTION_TOP_K = 20  # Kaggle's VideoId,LabelConfidencePairs carries up to 20 pairs


@dataclass(frozen=True)
class TaggableVideo:
    video_id: str
    path: str  # "" for record input
    quantized: dict[str, np.ndarray]  # the model's feature names -> [T, D_name] uint8
    thumbnail: np.ndarray | None = None  # [H, W, 3] uint8
    display_size: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ScoringModel:
    """One model of the ensemble that scores every video (often the only one)."""

    url: str  # a model directory, local or gs://
    max_frames: int  # clip length it was trained on
    weight: float  # its share of the averaged probabilities; the weights sum to 1


@dataclass(frozen=True)
class TagSettings:
    """What every worker needs to score videos and lay the scores out as rows."""

    models: tuple[ScoringModel, ...]
    staging: str  # the run's staging folder: thumbnails go under its report/
    feature_names: tuple[str, ...]  # every model's frame-level inputs: rgb[, audio, flow, ...]
    feature_sizes: tuple[int, ...]
    fps: float
    top_k: int
    min_score: float
    segment_seconds: float
    smooth: int
    label_names: tuple[str, ...]  # empty: labels are bare indices


class ReadFrameRecords(beam.DoFn):
    """A TFRecord file -> its videos; a record that does not decode fails alone, a damaged
    file fails the job with one line naming it and the offset (nothing is committed)."""

    def __init__(self, feature_names: tuple[str, ...], progress_token: str) -> None:
        self._feature_names = tuple(feature_names)
        self._progress_token = progress_token
        self._frames = beam.metrics.Metrics.counter(NAMESPACE, "frames")

    def process(self, path: str) -> Iterator:
        with storage.open_read(path) as source:
            for offset, data in tagging_records.iter_records(source, path):
                yield beam.pvalue.TaggedOutput(COUNTS, ("seen", 1))
                try:
                    record = records.decode_frame_example(data, self._feature_names)
                except ValueError as error:
                    detail = f"record at byte {offset}: {error}"
                    yield beam.pvalue.TaggedOutput(FAILED, Failure(path, "", "bad_record", detail))
                    continue
                frames = len(record.features[self._feature_names[0]])
                self._frames.inc(frames)
                progress.report(self._progress_token, frames)
                yield TaggableVideo(record.video_id, "", record.features)


def embedded_video(embedded: EmbeddedVideo, feature_names: tuple[str, ...]) -> TaggableVideo:
    summary = embedded.summary
    return TaggableVideo(
        embedded.video.video_id,
        embedded.video.path,
        {name: embedded.features[name] for name in feature_names},
        summary.thumbnail,
        summary.display_size,
    )


def size_mismatch(video: TaggableVideo, settings: TagSettings) -> str:
    """Why the video's features do not fit the model ("" when they do)."""
    lengths = {len(frames) for frames in video.quantized.values()}
    if len(lengths) > 1:
        return f"feature lists differ in length {sorted(lengths)}"
    for name, size in zip(settings.feature_names, settings.feature_sizes, strict=True):
        frames = video.quantized[name]
        if frames.ndim != 2 or frames.shape[1] != size:
            return f"{name} features of shape {frames.shape}, the model takes {size}"
    return ""


class TagVideo(beam.DoFn):
    """Scores a video and its segments: tag rows, segment rows, a Kaggle line, a thumbnail.

    With several models each scores the video from the features it takes, over its own clip
    length, and the video's and segments' scores are their weighted mean."""

    def __init__(self, settings: TagSettings) -> None:
        self._settings = settings
        self._model_loads = beam.metrics.Metrics.counter(NAMESPACE, "tagging_model_loads")
        self._tagged = beam.metrics.Metrics.counter(NAMESPACE, "videos_tagged")

    def setup(self) -> None:
        from pooling_models import model_dir

        self._scorers = []
        for member in self._settings.models:
            model = model_dir.load_model(member.url)  # a gs:// file: staged once
            self._scorers.append(tagging.WindowScorer(model))
            self._model_loads.inc()

    def process(self, video: TaggableVideo) -> Iterator:
        settings = self._settings
        detail = size_mismatch(video, settings)
        if detail:
            failure = Failure(video.path, video.video_id, "feature_size_mismatch", detail)
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        frames_per_segment = max(1, round(settings.segment_seconds * settings.fps))
        try:
            frames = {name: dequantize(values) for name, values in video.quantized.items()}
            scores = tagging.ensemble_scores(
                [
                    tagging.score_video(
                        scorer, frames, member.max_frames, frames_per_segment, settings.smooth
                    )
                    for scorer, member in zip(self._scorers, settings.models, strict=True)
                ],
                [member.weight for member in settings.models],
            )
            if not np.isfinite(scores.video).all() or not np.isfinite(scores.segments).all():
                raise ValueError("the model gave non-finite scores")
        except Exception as error:  # noqa: BLE001 -- one video fails, as RunInference's handler
            detail = f"{type(error).__name__}: {error}"
            yield beam.pvalue.TaggedOutput(
                FAILED, Failure(video.path, video.video_id, TAG_ERROR, detail)
            )
            return
        tags = list(self._video_rows(video, scores.video))
        yield from tags
        yield from self._segment_rows(video, scores.segments, frames_per_segment)
        top = tagging.top_labels(scores.video, PREDICTION_TOP_K, 0.0)
        pairs = " ".join(f"{label} {tagging_outputs.score_text(score)}" for label, score in top)
        yield beam.pvalue.TaggedOutput(PREDICTIONS, (report.printable(video.video_id), pairs))
        yield beam.pvalue.TaggedOutput(TOP_SCORE, float(scores.video.max()))
        if video.thumbnail is not None:
            name = report.thumbnail_name(report.printable(video.video_id))
            jpeg = report.encode_thumbnail(video.thumbnail, video.display_size)
            folder = storage.join(settings.staging, report.REPORT_DIR, report.THUMBNAIL_DIR)
            storage.write_bytes(storage.join(folder, name), jpeg)
        yield beam.pvalue.TaggedOutput(COUNTS, ("tagged" if tags else "below_min_score", 1))
        self._tagged.inc()

    def _name(self, label: int) -> str:
        names = self._settings.label_names
        return names[label] if label < len(names) else ""

    def _video_rows(self, video: TaggableVideo, scores: np.ndarray) -> Iterator[dict]:
        top = tagging.top_labels(scores, self._settings.top_k, self._settings.min_score)
        for rank, (label, score) in enumerate(top, start=1):
            yield {
                "id": report.printable(video.video_id),
                "path": report.printable(video.path),
                "rank": rank,
                "label_index": label,
                "label_name": self._name(label),
                "score": score,
            }

    def _segment_rows(
        self, video: TaggableVideo, segments: np.ndarray, frames_per_segment: int
    ) -> Iterator:
        settings = self._settings
        duration_s = len(video.quantized[settings.feature_names[0]]) / settings.fps
        for index, scores in enumerate(segments):
            start_s = index * frames_per_segment / settings.fps
            end_s = min((index + 1) * frames_per_segment / settings.fps, duration_s)
            for label, score in tagging.top_labels(scores, settings.top_k, settings.min_score):
                row = {"id": report.printable(video.video_id), "start_s": start_s, "end_s": end_s}
                row.update(label_index=label, label_name=self._name(label), score=score)
                yield beam.pvalue.TaggedOutput(SEGMENTS, row)


@dataclass(frozen=True)
class TaggingJob:
    settings: TagSettings
    inputs: TaggingInputs
    specs: tuple[FeatureSpec, ...]  # of raw videos: how to embed them (the model's manifest)
    summary: dict  # run id and settings, for tagging.json


def run_job(
    pipeline: beam.Pipeline, job: TaggingJob, frames_per_batch: int, faults: FaultPlan | None
) -> None:
    """Builds the job on `pipeline` and runs it to the end, with a progress line when the
    number of videos is known; a damaged record file ends it as one UsageError."""
    total = len(job.inputs.videos) or job.inputs.records_total  # 0: records in a bucket
    shown = progress.Progress("tag_videos", total) if total else None
    token = shown.token if shown else ""
    embed = None
    if job.inputs.kind == "videos":
        embed = decode_embed.DecodeAndEmbed(
            job.specs,
            pca_paths={spec.name: spec.pca for spec in job.specs},
            frames_per_batch=frames_per_batch,
            max_frames=0,  # the whole video
            keep_thumbnails=True,
            faults=faults,
            progress_token=token,
        )
    build_graph(pipeline, job.settings, job.inputs, job.summary, token, embed)
    with shown or contextlib.nullcontext():
        try:
            pipeline.run().wait_until_finish()
        except UsageError as error:  # Beam appends the step's name to the first argument
            what = re.sub(r" \[while running '[^']*'\]", "", error.what)
            raise UsageError(what, error.where, error.fix) from None


def build_graph(
    pipeline: beam.Pipeline,
    settings: TagSettings,
    tagging_inputs: TaggingInputs,
    summary: dict,
    progress_token: str,
    embed: beam.PTransform | None = None,
) -> None:
    """Adds the tagging job to `pipeline`; every output lands in `settings.staging`.

    `embed` turns VideoInputs into (EmbeddedVideos, failures) for raw videos; None for
    records input."""
    staging = settings.staging
    if tagging_inputs.kind == "records":
        read = (
            pipeline
            | "RecordFiles" >> beam.Create(tagging_inputs.record_files)
            | "Spread" >> beam.Reshuffle()
            | "ReadRecords"
            >> beam.ParDo(ReadFrameRecords(settings.feature_names, progress_token)).with_outputs(
                FAILED, COUNTS, main="videos"
            )
        )
        videos, failure_parts, count_parts = read.videos, [read[FAILED]], [read[COUNTS]]
    else:
        seen = len(tagging_inputs.videos) + len(tagging_inputs.failures)
        matched = pipeline | "Videos" >> beam.Create(tagging_inputs.videos)
        embedded, embed_failures = matched | "DecodeAndEmbed" >> embed
        names = settings.feature_names
        videos = embedded | "ToTaggable" >> beam.Map(embedded_video, names)
        input_failures = pipeline | "InputFailures" >> beam.Create(tagging_inputs.failures)
        failure_parts = [input_failures, embed_failures]
        count_parts = [pipeline | "Seen" >> beam.Create([("seen", seen)])]
    tagged = videos | "Tag" >> beam.ParDo(TagVideo(settings)).with_outputs(
        SEGMENTS, PREDICTIONS, FAILED, COUNTS, TOP_SCORE, main="tags"
    )
    failures = [*failure_parts, tagged[FAILED]] | "AllFailures" >> beam.Flatten()
    _ = [
        tagged.tags | "TagList" >> beam.combiners.ToList()
        | "WriteTags" >> beam.Map(tagging_outputs.write_tags, staging),
        tagged[SEGMENTS] | "SegmentList" >> beam.combiners.ToList()
        | "WriteSegments" >> beam.Map(tagging_outputs.write_segments, staging),
        tagged[PREDICTIONS] | "PredictionList" >> beam.combiners.ToList()
        | "WritePredictions" >> beam.Map(tagging_outputs.write_predictions, staging),
        failures | "FailureList" >> beam.combiners.ToList()
        | "WriteFailures" >> beam.Map(write_failures, staging, summary["run_id"]),
    ]  # fmt: skip
    counts = (
        [*count_parts, tagged[COUNTS], failures | "CountFailures" >> beam.FlatMap(failure_counts)]
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountsDict" >> beam.combiners.ToDict()
    )
    top_scores = beam.pvalue.AsList(tagged[TOP_SCORE])
    _ = counts | "WriteSummary" >> beam.Map(
        tagging_outputs.write_summary, top_scores, staging, summary
    )


def failure_counts(failure: Failure) -> Iterator[tuple[str, int]]:
    yield "failed", 1
    yield f"failed_by_reason/{failure.reason}", 1


def write_failures(failures: list[Failure], folder: str, run_id: str) -> None:
    """The dead letter, `failed-<run_id>.jsonl`: one JSON line per input that failed."""
    beam.metrics.Metrics.counter(NAMESPACE, "videos_failed").inc(len(failures))
    ordered = sorted(failures, key=lambda failure: (failure.path, failure.video_id))
    text = "".join(failure.to_json_line(run_id) + "\n" for failure in ordered)
    storage.write_text(storage.join(folder, f"failed-{run_id}.jsonl"), text)
