"""tag_videos' own steps: collect a video's features, score it, lay the scores out as rows."""

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from features import records
from features.formats import RGB_KEY
from features.quantize import dequantize
from pipelines import report, storage
from pipelines.elements import DecodeSummary, Failure
from pipelines.transforms import COUNTS, FAILED, SUMMARY, concatenate_chunks
from pooling_models import model_dir, staging, tagging

SEGMENTS = "segments"
PREDICTIONS = "predictions"
PREDICTION_TOP_K = 20  # Kaggle's VideoId,LabelConfidencePairs carries up to 20 pairs
PROGRESS_EVERY = 25


@dataclass(frozen=True)
class TaggableVideo:
    video_id: str
    path: str  # "" for record input
    quantized: np.ndarray  # [T, D] uint8
    thumbnail: np.ndarray | None = None  # [H, W, 3] uint8
    display_size: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class TagSettings:
    model_dir: str
    output: str
    fps: float
    max_frames: int  # clip length the model was trained on
    top_k: int
    min_score: float
    segment_seconds: float
    smooth: int
    label_names: tuple[str, ...]  # empty: labels are bare indices


def collect_frames(joined: tuple[str, dict]) -> Iterator[TaggableVideo]:
    """Chunks + decode summary of one video -> its whole quantized feature sequence."""
    video_id, sides = joined
    summary: DecodeSummary
    for summary in sides[SUMMARY]:  # none: the video failed mid-way and is in the dead letter
        quantized, _ = concatenate_chunks(sides["chunks"])
        yield TaggableVideo(
            video_id, summary.video.path, quantized, summary.thumbnail, summary.display_size
        )


def record_video(serialized: bytes) -> TaggableVideo:
    record = records.decode_frame_example(serialized, feature_names=(RGB_KEY,))
    return TaggableVideo(record.video_id, "", record.features[RGB_KEY])


def csv_line(values: list) -> str:
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(values)
    return line.getvalue()


class TagVideo(beam.DoFn):
    """Scores a video and its segments; emits tag rows, segment rows and a Kaggle line."""

    def __init__(self, settings: TagSettings, feature_size: int) -> None:
        self._settings = settings
        self._feature_size = feature_size
        self._tagged = 0

    def setup(self) -> None:
        # A gs:// model directory is downloaded once per worker process.
        model = model_dir.load_model(staging.local_dir_for(self._settings.model_dir))
        self._scorer = tagging.WindowScorer(model)

    def process(self, video: TaggableVideo) -> Iterator:
        settings = self._settings
        if video.quantized.ndim != 2 or video.quantized.shape[1] != self._feature_size:
            detail = (
                f"features of shape {video.quantized.shape}, the model takes {self._feature_size}"
            )
            failure = Failure(video.path, video.video_id, "feature_size_mismatch", detail)
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        frames_per_segment = max(1, round(settings.segment_seconds * settings.fps))
        scores = tagging.score_video(
            self._scorer,
            dequantize(video.quantized),
            settings.max_frames,
            frames_per_segment,
            settings.smooth,
        )
        yield from self._video_rows(video, scores.video)
        yield from self._segment_rows(video, scores.segments, frames_per_segment)
        top = tagging.top_labels(scores.video, PREDICTION_TOP_K, 0.0)
        pairs = " ".join(f"{label} {score:.6f}" for label, score in top)
        yield beam.pvalue.TaggedOutput(PREDICTIONS, csv_line([video.video_id, pairs]))
        if video.thumbnail is not None:
            name = report.thumbnail_name(video.video_id)
            jpeg = report.encode_thumbnail(video.thumbnail, video.display_size)
            storage.write_bytes(storage.join(settings.output, "report", "thumbnails", name), jpeg)
        yield beam.pvalue.TaggedOutput(COUNTS, ("tagged", 1))
        self._tagged += 1
        if self._tagged % PROGRESS_EVERY == 0:
            print(f"tag_videos: {self._tagged} videos tagged by this worker", file=sys.stderr)

    def _name(self, label: int) -> str:
        names = self._settings.label_names
        return names[label] if label < len(names) else ""

    def _video_rows(self, video: TaggableVideo, scores: np.ndarray) -> Iterator[dict]:
        top = tagging.top_labels(scores, self._settings.top_k, self._settings.min_score)
        for rank, (label, score) in enumerate(top, start=1):
            yield {
                "id": video.video_id,
                "path": video.path,
                "rank": rank,
                "label_index": label,
                "label_name": self._name(label),
                "score": score,
            }

    def _segment_rows(self, video: TaggableVideo, segments: np.ndarray, frames_per_segment: int):
        settings = self._settings
        duration_s = len(video.quantized) / settings.fps
        for index, scores in enumerate(segments):
            start_s = index * frames_per_segment / settings.fps
            end_s = min((index + 1) * frames_per_segment / settings.fps, duration_s)
            for label, score in tagging.top_labels(scores, settings.top_k, settings.min_score):
                row = {"id": video.video_id, "start_s": start_s, "end_s": end_s}
                row.update(label_index=label, label_name=self._name(label), score=score)
                yield beam.pvalue.TaggedOutput(SEGMENTS, row)
