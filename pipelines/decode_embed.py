"""One composite transform, "decode and embed": videos in, quantized feature streams out.

    embedded, failures = videos | DecodeAndEmbed(specs, pca_paths, frames_per_batch, ...)

Per stream (FeatureSpec): decode at the stream's rate and frame size → embed with its CNN
(RunInference) → whiten with its PCA and quantize to bytes; then the streams of a video are
joined by id into one EmbeddedVideo. The audio stream is not decoded on its own: rgb's
DecodeFrames demuxes the file once and also yields one log-mel example per rgb sample
(tagged AUDIO_CHUNKS), which VGGish embeds. extract_features turns those into records, tag_videos
into scores. A video that cannot be decoded, or whose CNN or quantizer fails (an exception,
a NaN), becomes a Failure (dead letter) and the job goes on.
"""

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

from features import frames, quantize, storage
from features.formats import AUDIO_KEY
from features.pca import PcaTransform
from features.streams import FeatureSpec
from pipelines import progress
from pipelines.config import FaultPlan
from pipelines.elements import DecodeSummary, EmbeddedVideo, Failure, QuantizedChunk, VideoInput
from pipelines.model_handler import NAMESPACE, KeyedFeatures, handler_for
from pipelines.thumbnails import MiddleFramePicker

FAILED = "failed"
SUMMARY = "summary"
AUDIO_CHUNKS = "audio_chunks"
EMBED_ERROR = "embed_error"
READ_ERROR = "read_error"


def beam_key(video_id: str) -> bytes:
    """A video id as Beam keys it: bytes, since Beam's str coder refuses the surrogate
    escapes a path that is not UTF-8 brings (`caf\\xe9.mp4`); the original bytes survive."""
    return video_id.encode("utf-8", "surrogateescape")


class DecodeFrames(beam.DoFn):
    """Streams a video's sampled frames as chunks keyed by (beam_key, first frame index),
    then its DecodeSummary; a video that yields no frame is a Failure instead.

    With audio, the same pass also yields (tagged AUDIO_CHUNKS) ((beam_key, start), [n, 96,
    64] float32) log-mel examples, one per frame sample and keyed as the frame chunks; a
    video without an audio track gets examples of digital silence.
    """

    def __init__(
        self,
        fps: float,
        max_frames: int,
        frame_size: tuple[int, int],
        chunk: int,
        keep_thumbnail: bool = False,
        audio: bool = False,
        progress_token: str = "",
    ) -> None:
        self._progress_token = progress_token
        self._fps = fps
        self._max_frames = max_frames
        self._frame_size = frame_size
        self._chunk = chunk
        self._keep_thumbnail = keep_thumbnail
        self._audio = audio

    def process(self, video: VideoInput) -> Iterator:
        report = frames.DecodeReport()
        picker = MiddleFramePicker() if self._keep_thumbnail else None
        try:
            with storage.open_read(video.path) as source:
                for chunk in frames.iter_media_chunks(
                    source,
                    fps=self._fps,
                    max_frames=self._max_frames,
                    frame_size=self._frame_size,
                    chunk_frames=self._chunk,
                    report=report,
                    audio=self._audio,
                ):
                    key = (beam_key(video.video_id), chunk.start_index)
                    if isinstance(chunk, frames.AudioChunk):
                        yield beam.pvalue.TaggedOutput(AUDIO_CHUNKS, (key, chunk.examples))
                        continue
                    for frame in chunk.frames if picker else ():
                        picker.add(frame)
                    yield key, chunk.frames
        except frames.VideoDecodeError as error:
            self._report_progress(0)
            yield beam.pvalue.TaggedOutput(
                FAILED, Failure(video.path, video.video_id, error.reason, str(error))
            )
            return
        except OSError as error:
            self._report_progress(0)
            yield beam.pvalue.TaggedOutput(
                FAILED, Failure(video.path, video.video_id, READ_ERROR, str(error))
            )
            return
        summary = DecodeSummary(
            video,
            report.frames,
            report.truncated,
            report.error,
            report.span_s,
            display_size=(report.height, report.width),
            thumbnail=picker.middle() if picker else None,
            has_audio=report.has_audio,
            audio_truncated=report.audio_truncated,
        )
        self._report_progress(report.frames)
        yield beam.pvalue.TaggedOutput(SUMMARY, (beam_key(video.video_id), summary))

    def _report_progress(self, frames_done: int) -> None:
        """Tells the launcher's Progress line, from inside the decode loop's own step, that a
        video is done: a step downstream of it may only run once every video is decoded."""
        if self._progress_token:
            progress.report(self._progress_token, frames_done)


class WhitenAndQuantize(beam.DoFn):
    """((id, start), features) -> (id, QuantizedChunk), with pca.npz read on the worker:
    a 2048 -> 1024 PCA is 8 MB, too big to pickle into the job graph. A chunk the CNN
    failed on, or whose features whiten to NaN, carries the error instead of bytes."""

    def __init__(self, pca_path: str) -> None:
        self._pca_path = pca_path

    def setup(self) -> None:
        self._pca = PcaTransform.load_npz(io.BytesIO(storage.read_bytes(self._pca_path)))

    def process(self, keyed: KeyedFeatures) -> Iterator[tuple[bytes, QuantizedChunk]]:
        (key, start_index), features = keyed
        if isinstance(features, str):
            yield key, QuantizedChunk(start_index, None, None, error=features)
            return
        try:
            whitened = self._pca.apply(features)  # [n, K] float32
            chunk = QuantizedChunk(
                start_index, quantize.quantize(whitened), whitened.sum(0, np.float64)
            )
        except ValueError as error:  # NaN features, or a PCA of another width
            chunk = QuantizedChunk(start_index, None, None, error=str(error))
        yield key, chunk


def concatenate_chunks(chunks: Iterable[QuantizedChunk]) -> tuple[np.ndarray, np.ndarray]:
    """A video's chunks in frame order -> (quantized [T, K] uint8, mean whitened [K] float64)."""
    ordered = sorted(chunks, key=lambda chunk: chunk.start_index)
    quantized = np.concatenate([chunk.quantized for chunk in ordered])
    mean = np.sum([chunk.feature_sum for chunk in ordered], axis=0) / len(quantized)
    return quantized, mean


class AssembleVideo(beam.DoFn):
    """Joins each stream's chunks in order into one EmbeddedVideo; counts videos_ok, frames.

    `decoded` names the streams with a DecodeFrames of their own (and so a summary side);
    audio rides on rgb's. Default: all of `names`."""

    def __init__(self, names: Sequence[str], decoded: Sequence[str] | None = None) -> None:
        self._names = tuple(names)
        self._decoded = self._names if decoded is None else tuple(decoded)
        self._ok = beam.metrics.Metrics.counter(NAMESPACE, "videos_ok")
        self._frames = beam.metrics.Metrics.counter(NAMESPACE, "frames")

    def process(self, joined: tuple[bytes, dict]) -> Iterator:
        _, sides = joined
        summaries = [list(sides[summary_key(name)]) for name in self._decoded]
        if all(summaries):  # else a stream failed to decode: its Failure is out already
            yield from self._video_or_failure(summaries[0][0], sides)

    def _video_or_failure(self, summary: DecodeSummary, sides: dict) -> Iterator:
        errors = [chunk.error for name in self._names for chunk in sides[name] if chunk.error]
        if errors:
            video = summary.video
            failure = Failure(video.path, video.video_id, EMBED_ERROR, errors[0])
            yield beam.pvalue.TaggedOutput(FAILED, failure)
        else:
            yield self._assemble(summary, sides)

    def _assemble(self, summary: DecodeSummary, sides: dict) -> EmbeddedVideo:
        features, means = {}, {}
        for name in self._names:
            features[name], mean = concatenate_chunks(sides[name])
            means[name] = mean.astype(np.float32)
        self._ok.inc()
        self._frames.inc(len(features[self._names[0]]))
        return EmbeddedVideo(summary.video, features, means, summary)


def summary_key(name: str) -> str:
    return f"{name}/{SUMMARY}"


class DecodeAndEmbed(beam.PTransform):
    """VideoInput -> (EmbeddedVideo collection, Failure collection)."""

    def __init__(
        self,
        specs: Sequence[FeatureSpec],
        pca_paths: Mapping[str, str],
        frames_per_batch: int,
        max_frames: int,
        keep_thumbnails: bool = False,
        faults: FaultPlan | None = None,
        progress_token: str = "",
    ) -> None:
        super().__init__()
        self._specs = tuple(specs)
        self._pca_paths = dict(pca_paths)
        self._frames_per_batch = frames_per_batch
        self._max_frames = max_frames
        self._keep_thumbnails = keep_thumbnails
        self._faults = faults
        self._progress_token = progress_token

    # No return annotation: Beam warns on any output hint that is not a single PCollection.
    def expand(self, videos: beam.PCollection):
        audio = [spec for spec in self._specs[1:] if spec.name == AUDIO_KEY]
        decoded_specs = [spec for spec in self._specs if spec.name != AUDIO_KEY]
        joined, failures, audio_chunks = {}, [], None
        for index, spec in enumerate(decoded_specs):
            with_audio = bool(audio) and index == 0
            decoded = videos | f"Decode {spec.name}" >> beam.ParDo(
                DecodeFrames(
                    spec.fps,
                    self._max_frames,
                    spec.frame_size,
                    self._frames_per_batch,
                    keep_thumbnail=self._keep_thumbnails and index == 0,
                    audio=with_audio,
                    progress_token=self._progress_token if index == 0 else "",
                )
            ).with_outputs(FAILED, SUMMARY, AUDIO_CHUNKS, main="chunks")
            joined[spec.name] = self._embed(spec, decoded.chunks)
            joined[summary_key(spec.name)] = decoded[SUMMARY]
            failures.append(decoded[FAILED])
            if with_audio:
                audio_chunks = decoded[AUDIO_CHUNKS]
        for spec in audio:
            joined[spec.name] = self._embed(spec, audio_chunks)
        assembled = (
            joined
            | "JoinStreams" >> beam.CoGroupByKey()
            | "Assemble"
            >> beam.ParDo(
                AssembleVideo(
                    [spec.name for spec in self._specs], [spec.name for spec in decoded_specs]
                )
            ).with_outputs(FAILED, main="videos")
        )
        all_failures = (*failures, assembled[FAILED]) | "EmbedFailures" >> beam.Flatten()
        return assembled.videos, all_failures

    def _embed(self, spec: FeatureSpec, chunks: beam.PCollection) -> beam.PCollection:
        """Keyed chunks -> (id, QuantizedChunk): the spec's network, then its PCA."""
        handler = handler_for(spec, self._frames_per_batch, self._faults)
        return (
            chunks
            | f"Embed {spec.name}" >> RunInference(handler)
            | f"Quantize {spec.name}" >> beam.ParDo(WhitenAndQuantize(self._pca_paths[spec.name]))
        )
