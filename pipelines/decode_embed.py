"""One composite transform, "decode and embed": videos in, quantized feature streams out.

    embedded, failures = videos | DecodeAndEmbed(specs, pca_paths, frames_per_batch, ...)

One DecodeFrames pass per video reads the file once and yields, per rgb sample, every
stream's input: the frame (rgb), a log-mel example (audio), a stacked optical-flow field
(flow), a 16-frame clip (i3d, c3d) and the centre crop (fovea), each stream's chunks under
its own tag (chunks_tag). Per stream: embed with its network (RunInference) → whiten with its
PCA and quantize to bytes; then the streams of a video are joined by id into one
EmbeddedVideo. extract_features turns those into records, tag_videos into scores. A video
that cannot be decoded, or whose CNN or quantizer fails (an exception, a NaN), becomes a
Failure (dead letter) and the job goes on.
"""

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

from features import clips, decoding, frames, quantize, storage
from features.cli import UsageError
from features.formats import AUDIO_KEY, C3D_KEY, FLOW_KEY, FOVEA_KEY, I3D_KEY, RGB_KEY
from features.pca import PcaTransform
from features.streams import FeatureSpec
from pipelines import progress
from pipelines.config import FaultPlan
from pipelines.elements import DecodeSummary, EmbeddedVideo, Failure, QuantizedChunk, VideoInput
from pipelines.model_handler import NAMESPACE, KeyedFeatures, handler_for
from pipelines.thumbnails import MiddleFramePicker

FAILED = "failed"
SUMMARY = "summary"
RGB_CHUNKS = "chunks"
EMBED_ERROR = "embed_error"
READ_ERROR = "read_error"


def chunks_tag(stream: str) -> str:
    """DecodeFrames' output tag of a stream's inputs: "chunks" for rgb, "audio_chunks", ..."""
    return RGB_CHUNKS if stream == RGB_KEY else f"{stream}_chunks"


def sample_views(
    specs: Sequence[FeatureSpec], frames_per_batch: int
) -> tuple[clips.ClipView | clips.FoveaView, ...]:
    """What DecodeFrames cuts around each sample for the picture streams after rgb."""
    views = []
    for spec in specs[1:]:
        chunk = spec.samples_per_batch(frames_per_batch)
        if spec.name == FLOW_KEY:
            views.append(clips.flow_view(spec.frame_size, chunk))
        elif spec.name in (I3D_KEY, C3D_KEY):
            views.append(clips.clip_view(spec.name, spec.frame_size, chunk))
        elif spec.name == FOVEA_KEY:
            views.append(clips.fovea_view(spec.frame_size, chunk))
    return tuple(views)


def decode_streams(
    videos: beam.PCollection,
    specs: Sequence[FeatureSpec],
    max_frames: int,
    frames_per_batch: int,
    keep_thumbnails: bool = False,
    progress_token: str = "",
) -> beam.pvalue.DoOutputsTuple:
    """One DecodeFrames pass (at rgb's rate) -> every stream's keyed chunks, under
    chunks_tag(stream), with the FAILED and SUMMARY outputs."""
    rgb = specs[0]
    decode = DecodeFrames(
        rgb.fps,
        max_frames,
        rgb.frame_size,
        frames_per_batch,
        keep_thumbnail=keep_thumbnails,
        audio=any(spec.name == AUDIO_KEY for spec in specs),
        views=sample_views(specs, frames_per_batch),
        progress_token=progress_token,
        decode=rgb.decode,
        decode_device=rgb.decode_device,
    )
    tags = [chunks_tag(spec.name) for spec in specs[1:]]
    return videos | "Decode" >> beam.ParDo(decode).with_outputs(
        FAILED, SUMMARY, *tags, main=RGB_CHUNKS
    )


def beam_key(video_id: str) -> bytes:
    """A video id as Beam keys it: bytes, since Beam's str coder refuses the surrogate
    escapes a path that is not UTF-8 brings (`caf\\xe9.mp4`); the original bytes survive."""
    return video_id.encode("utf-8", "surrogateescape")


class DecodeFrames(beam.DoFn):
    """Streams a video's sampled frames as chunks keyed by (beam_key, first frame index),
    then its DecodeSummary; a video that yields no frame is a Failure instead.

    With audio, the same pass also yields (tagged chunks_tag("audio")) ((beam_key, start),
    [n, 96, 64] float32) log-mel examples, one per frame sample and keyed as the frame chunks;
    a video without an audio track gets examples of digital silence. Each view (flow, i3d,
    c3d, fovea) yields its inputs likewise, tagged chunks_tag(view.name).

    `decode` (exact | fast) picks the frames samples come from; `decode_device` (auto | cpu
    | gpu) is settled on the worker, where the GPU is; counts hw_decode_fallbacks.
    """

    def __init__(
        self,
        fps: float,
        max_frames: int,
        frame_size: tuple[int, int],
        chunk: int,
        keep_thumbnail: bool = False,
        audio: bool = False,
        views: Sequence[clips.ClipView | clips.FoveaView] = (),
        progress_token: str = "",
        decode: str = decoding.DECODE_EXACT,
        decode_device: str = decoding.DEVICE_CPU,
    ) -> None:
        self._decode = decode
        self._decode_device = decode_device
        self._progress_token = progress_token
        self._views = tuple(views)
        self._fps = fps
        self._max_frames = max_frames
        self._frame_size = frame_size
        self._chunk = chunk
        self._keep_thumbnail = keep_thumbnail
        self._audio = audio

    def setup(self) -> None:
        try:
            gpu = decoding.use_gpu(self._decode_device)
        except ValueError as error:  # a worker without the GPU the job asked for
            raise UsageError(str(error), "--decode_device gpu", "run on GPU workers") from None
        self._device = decoding.DEVICE_GPU if gpu else decoding.DEVICE_CPU
        self._fallbacks = beam.metrics.Metrics.counter(NAMESPACE, "hw_decode_fallbacks")
        if any(getattr(view, "flow", False) for view in self._views):
            import cv2

            # Every core already decodes a video of its own; OpenCV's threads inside one
            # flow estimate cost more CPU than they save wall time there.
            cv2.setNumThreads(1)

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
                    views=self._views,
                    decode=self._decode,
                    decode_device=self._device,
                ):
                    key = (beam_key(video.video_id), chunk.start_index)
                    if isinstance(chunk, frames.AudioChunk):
                        yield beam.pvalue.TaggedOutput(chunks_tag(AUDIO_KEY), (key, chunk.examples))
                        continue
                    if isinstance(chunk, clips.ViewChunk):
                        yield beam.pvalue.TaggedOutput(chunks_tag(chunk.name), (key, chunk.inputs))
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
            max_sample_error_s=report.max_sample_error_s,
            hw_decoded=report.gpu_decoded,
            hw_decode_fallback=report.gpu_fallback,
        )
        if report.gpu_fallback:
            self._fallbacks.inc()
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
    The video's one decode summary comes under SUMMARY."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._ok = beam.metrics.Metrics.counter(NAMESPACE, "videos_ok")
        self._frames = beam.metrics.Metrics.counter(NAMESPACE, "frames")

    def process(self, joined: tuple[bytes, dict]) -> Iterator:
        _, sides = joined
        summaries = list(sides[SUMMARY])
        if summaries:  # else the video failed to decode: its Failure is out already
            yield from self._video_or_failure(summaries[0], sides)

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
        decoded = decode_streams(
            videos,
            self._specs,
            self._max_frames,
            self._frames_per_batch,
            self._keep_thumbnails,
            self._progress_token,
        )
        joined = {
            spec.name: self._embed(spec, decoded[chunks_tag(spec.name)]) for spec in self._specs
        }
        joined[SUMMARY] = decoded[SUMMARY]
        assembled = (
            joined
            | "JoinStreams" >> beam.CoGroupByKey()
            | "Assemble"
            >> beam.ParDo(AssembleVideo([spec.name for spec in self._specs])).with_outputs(
                FAILED, main="videos"
            )
        )
        all_failures = (decoded[FAILED], assembled[FAILED]) | "EmbedFailures" >> beam.Flatten()
        return assembled.videos, all_failures

    def _embed(self, spec: FeatureSpec, chunks: beam.PCollection) -> beam.PCollection:
        """Keyed chunks -> (id, QuantizedChunk): the spec's network, then its PCA."""
        handler = handler_for(spec, self._frames_per_batch, self._faults)
        return (
            chunks
            | f"Embed {spec.name}" >> RunInference(handler)
            | f"Quantize {spec.name}" >> beam.ParDo(WhitenAndQuantize(self._pca_paths[spec.name]))
        )
