"""The extraction job's steps: match, key, label, decode, embed, quantize, assemble."""

import hashlib
import io
import os
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from features import frames, quantize, records, video_ids
from features.formats import FAILED_PREFIX, MEAN_RGB_KEY, RGB_KEY
from features.labels import LabelError, Vocabulary, is_header, parse_labels_row
from features.pca import PcaTransform
from pipelines import storage
from pipelines.config import ExtractConfig
from pipelines.elements import DecodeSummary, Failure, QuantizedChunk, VideoInput
from pipelines.model_handler import BackboneModelHandler
from pipelines.thumbnails import MiddleFramePicker

FAILED = "failed"
SUMMARY = "summary"
COUNTS = "counts"
VIDEO_LEVEL = "video_level"
OK_ID = "ok_id"
# Test hook: "after_videos:N" or "before_commit" makes a job fail there, for rerun tests.
FAULT_ENV = "FRAMEVLAD_FAULT"
NAMESPACE = "framevlad"


def failure_counts(failure: Failure) -> Iterator[tuple[str, int]]:
    yield "failed", 1
    yield f"failed_by_reason/{failure.reason}", 1


def write_failures(failures: beam.PCollection, output: str, run_id: str) -> beam.PCollection:
    """The dead letter: one JSON line per failure in `<output>/failed-<run_id>-*.jsonl`;
    returns the written file names."""
    return (
        failures
        | "FailureJson" >> beam.Map(lambda failure: failure.to_json_line(run_id))
        | "WriteFailures"
        >> beam.io.WriteToText(
            storage.join(output, f"{FAILED_PREFIX}-{run_id}"),
            file_name_suffix=".jsonl",
            num_shards=1,
        )
    )


def count_outcomes(
    seen: beam.PCollection, failures: beam.PCollection, *counts: beam.PCollection
) -> beam.PCollection:
    """One dict: `seen` (an element per input), failures by reason, and the (name, n) counts."""
    return (
        (
            seen | "CountSeen" >> beam.Map(lambda _: ("seen", 1)),
            failures | "CountFailures" >> beam.FlatMap(failure_counts),
            *counts,
        )
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountsDict" >> beam.combiners.ToDict()
    )


class MatchVideos(beam.PTransform):
    """Matches --input on the workers and keys each file by its video id."""

    def __init__(self, config: ExtractConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        paths = (
            pipeline
            | "MatchFiles" >> fileio.MatchFiles(self._config.input_pattern)
            | "Path" >> beam.Map(lambda metadata: metadata.path)
        )
        if self._config.match_folder:
            paths = paths | "VideoExtensions" >> beam.Filter(video_ids.is_video_file)
        id_root = self._config.id_root
        return paths | "KeyById" >> beam.Map(
            lambda path: (video_ids.video_id_from_path(path, id_root), path)
        )


class KeepFirstPath(beam.DoFn):
    """Two files with one id (`a.mp4`, `a.mkv`): the first path in sorted order keeps it."""

    def process(self, keyed_paths: tuple[str, Iterable[str]]) -> Iterator:
        video_id, paths = keyed_paths
        first, *others = sorted(paths)
        yield video_id, first
        for path in others:
            failure = Failure(path, video_id, "duplicate_id", f"{first} has the same id")
            yield beam.pvalue.TaggedOutput(FAILED, failure)


class JoinLabels(beam.DoFn):
    """Joins matched videos with their label rows; rows without a video are counted."""

    def process(self, joined: tuple[str, dict], vocabulary: Vocabulary) -> Iterator:
        video_id, sides = joined
        tokens = [token for row in sides["rows"] for token in row]
        if not sides["paths"]:
            yield beam.pvalue.TaggedOutput(COUNTS, ("labels_without_video", 1))
            return
        (path,) = sides["paths"]
        try:
            labels = tuple(vocabulary.indices(tokens))
        except LabelError as error:
            yield beam.pvalue.TaggedOutput(
                FAILED, Failure(path, video_id, "unknown_label", str(error))
            )
            return
        yield VideoInput(video_id, path, labels, labeled=bool(sides["rows"]))


class DecodeFrames(beam.DoFn):
    """Streams a video's sampled frames as chunks keyed by (video id, first frame index)."""

    def __init__(
        self,
        fps: float,
        max_frames: int,
        frame_size: tuple[int, int],
        chunk: int,
        keep_thumbnail: bool = False,
    ):
        self._fps = fps
        self._max_frames = max_frames
        self._frame_size = frame_size
        self._chunk = chunk
        self._keep_thumbnail = keep_thumbnail
        self._frames_counter = beam.metrics.Metrics.counter(NAMESPACE, "frames_decoded")

    def process(self, video: VideoInput) -> Iterator:
        report = frames.DecodeReport()
        picker = MiddleFramePicker() if self._keep_thumbnail else None
        try:
            with FileSystems.open(video.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                for chunk in frames.iter_frame_chunks(
                    f,
                    fps=self._fps,
                    max_frames=self._max_frames,
                    frame_size=self._frame_size,
                    chunk_frames=self._chunk,
                    report=report,
                ):
                    self._frames_counter.inc(len(chunk.frames))
                    for frame in chunk.frames if picker else ():
                        picker.add(frame)
                    yield (video.video_id, chunk.start_index), chunk.frames
        except frames.VideoDecodeError as error:
            failure = Failure(video.path, video.video_id, error.reason, str(error))
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        except OSError as error:
            failure = Failure(video.path, video.video_id, "read_error", str(error))
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        summary = DecodeSummary(
            video,
            report.frames,
            report.truncated,
            report.error,
            report.span_s,
            display_size=(report.height, report.width),
            thumbnail=picker.middle() if picker else None,
        )
        yield beam.pvalue.TaggedOutput(SUMMARY, (video.video_id, summary))


class EmbedVideos(beam.PTransform):
    """VideoInput -> {main: ((id, start), PredictionResult), summary, failed}."""

    def __init__(
        self, config: ExtractConfig, frame_size: tuple[int, int], keep_thumbnails: bool = False
    ) -> None:
        super().__init__()
        self._config = config
        self._frame_size = frame_size
        self._keep_thumbnails = keep_thumbnails

    # No return annotation: Beam warns on any output hint that is not a single PCollection.
    def expand(self, videos: beam.PCollection):
        config = self._config
        decoded = videos | "DecodeFrames" >> beam.ParDo(
            DecodeFrames(
                config.fps,
                config.max_frames,
                self._frame_size,
                config.batch_size,
                keep_thumbnail=self._keep_thumbnails,
            )
        ).with_outputs(FAILED, SUMMARY, main="chunks")
        handler = BackboneModelHandler(
            config.backbone, config.weights, seed=config.seed, batch_size=config.batch_size
        )
        embedded = decoded.chunks | "EmbedFrames" >> RunInference(KeyedModelHandler(handler))
        return embedded, decoded[SUMMARY], decoded[FAILED]


def quantize_chunk(
    keyed: tuple[tuple[str, int], PredictionResult], pca: PcaTransform
) -> tuple[str, QuantizedChunk]:
    (video_id, start_index), prediction = keyed
    whitened = pca.apply(prediction.inference)  # [n, K] float32
    chunk = QuantizedChunk(start_index, quantize.quantize(whitened), whitened.sum(0, np.float64))
    return video_id, chunk


def concatenate_chunks(chunks: Iterable[QuantizedChunk]) -> tuple[np.ndarray, np.ndarray]:
    """A video's chunks in frame order -> (quantized [T, K] uint8, mean whitened [K] float64)."""
    ordered = sorted(chunks, key=lambda chunk: chunk.start_index)
    quantized = np.concatenate([chunk.quantized for chunk in ordered])
    mean = np.sum([chunk.feature_sum for chunk in ordered], axis=0) / len(quantized)
    return quantized, mean


class WhitenAndQuantize(beam.DoFn):
    """((id, start), features) -> (id, QuantizedChunk), with pca.npz read on the worker:
    a 2048 -> 1024 PCA is 8 MB, too big to pickle into the job graph."""

    def __init__(self, pca_path: str) -> None:
        self._pca_path = pca_path

    def setup(self) -> None:
        self._pca = PcaTransform.load_npz(io.BytesIO(storage.read_bytes(self._pca_path)))

    def process(self, keyed: tuple[tuple[str, int], PredictionResult]) -> Iterator:
        yield quantize_chunk(keyed, self._pca)


class AssembleVideo(beam.DoFn):
    """Joins a video's chunks in order into its frame-level and video-level records."""

    def __init__(self) -> None:
        self._ok_counter = beam.metrics.Metrics.counter(NAMESPACE, "videos_ok")
        self._frames_counter = beam.metrics.Metrics.counter(NAMESPACE, "frames")

    def setup(self) -> None:
        # Test hook for crash-and-rerun tests: FRAMEVLAD_FAULT=after_videos:N fails the job
        # after this worker assembled N videos.
        fault = os.environ.get(FAULT_ENV, "")
        self._fail_after = int(fault.split(":")[1]) if fault.startswith("after_videos:") else -1
        self._assembled = 0

    def process(self, joined: tuple[str, dict]) -> Iterator:
        video_id, sides = joined
        # No summary: decoding raised after some chunks, and the video is in the dead letter.
        for summary in sides[SUMMARY]:
            yield from self._records(video_id, summary, sides["chunks"])

    def _records(self, video_id: str, summary: DecodeSummary, chunks: Iterable) -> Iterator:
        if self._assembled == self._fail_after:
            raise RuntimeError(f"{FAULT_ENV}: failing after {self._assembled} videos, as asked")
        self._assembled += 1
        quantized, mean = concatenate_chunks(chunks)
        labels = list(summary.video.labels)
        yield records.encode_frame_example(video_id, labels, {RGB_KEY: quantized})
        yield beam.pvalue.TaggedOutput(
            VIDEO_LEVEL,
            records.encode_video_example(video_id, labels, {MEAN_RGB_KEY: mean.astype(np.float32)}),
        )
        self._ok_counter.inc()
        self._frames_counter.inc(len(quantized))
        yield beam.pvalue.TaggedOutput(OK_ID, video_id)
        yield beam.pvalue.TaggedOutput(COUNTS, ("ok", 1))
        yield beam.pvalue.TaggedOutput(COUNTS, ("frames", len(quantized)))
        if summary.truncated:
            yield beam.pvalue.TaggedOutput(COUNTS, ("truncated", 1))
        if not summary.video.labeled:
            yield beam.pvalue.TaggedOutput(COUNTS, ("unlabeled", 1))


def read_label_rows(pipeline: beam.Pipeline, labels_csv: str) -> beam.PCollection:
    """`id,labels` CSV -> (id, [tokens]); the header line is optional."""
    return (
        pipeline
        | "ReadLabels" >> beam.io.ReadFromText(labels_csv)
        | "DropHeader" >> beam.Filter(lambda line: line.strip() and not is_header(line))
        | "ParseLabels" >> beam.Map(parse_labels_row)
    )


def stable_hash(video_id: str) -> int:
    """Process-independent hash, for choosing the same PCA sample on every run."""
    return int.from_bytes(hashlib.sha1(video_id.encode()).digest()[:8], "big")
