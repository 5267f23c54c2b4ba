"""Decode a video into RGB frames sampled at a fixed rate, streamed in small chunks.

Sampling contract: the timeline runs from the first decoded frame's timestamp (t = 0) to the
last's (t = span). Sample i, for i = 0 ... ceil(span * fps) - 1 (at least one sample when any
frame decodes), is the decoded frame nearest to t = i / fps; a tie goes to the earlier frame.
Times are exact rationals (pts * time_base), so a 30 fps video sampled at 30 fps yields every
frame once. Every target lies before the last frame, so choosing between the previous and the
current frame while streaming is exact and needs no duration header.

The decoder runs straight through (features.decoding) and only chosen frames are converted
to RGB. Display-matrix rotation is applied, so frames come out upright.

With audio=True (iter_media_chunks) the first audio stream is decoded from the same demuxer
pass, so the file is read once, and each sample also gets one 0.96 s log-mel example cut at
its time (features.audio_stream): exactly as many audio rows as rgb rows, silence where the
audio is shorter or absent. With views (features.clips: flow, i3d/c3d clips, fovea) the same
pass also yields each view's row per sample, from a short window of decoded frames.

decode="fast" samples the frames FFmpeg decodes when it skips those nothing references
(features.decoding), the same samples at the same times, each the nearest decoded frame;
report.max_sample_error_s says how far they strayed. Clip views (flow, i3d, c3d) need every
frame and refuse it. decode_device "gpu" decodes on NVDEC ("auto": when there is one); a
video the GPU refuses is decoded again on the CPU (report.gpu_fallback).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

from features.audio_stream import AudioTrack
from features.clips import ClipView, View, ViewChunk, ViewTrack
from features.decoding import (
    AV_TIME_BASE,
    DECODE_EXACT,
    DECODE_FAST,
    DECODE_MODES,
    DEVICE_CPU,
    EMPTY_FILE,
    NO_DECODABLE_FRAMES,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    DecodeReport,
    GpuRefusedError,
    VideoDecodeError,
    open_container,
    timed_frames,
    use_gpu,
)
from features.formats import DEFAULT_FPS, DEFAULT_MAX_FRAMES
from features.upright import UprightConverter

# Decoding's report and errors are part of this module's interface.
__all__ = [
    "EMPTY_FILE",
    "NOT_A_VIDEO",
    "NO_DECODABLE_FRAMES",
    "NO_VIDEO_STREAM",
    "AudioChunk",
    "DecodeReport",
    "FrameChunk",
    "VideoDecodeError",
    "iter_frame_chunks",
    "iter_media_chunks",
]


@dataclass
class FrameChunk:
    """Consecutive samples; chunk k + 1 starts where chunk k ends."""

    start_index: int  # index i of the first sample
    frames: np.ndarray  # [n, H, W, 3] uint8 RGB, upright
    timestamps_s: np.ndarray  # [n] float64: target times i / fps, what pipelines key on
    frame_times_s: np.ndarray  # [n] float64: times of the decoded frames chosen, from the first


@dataclass
class AudioChunk:
    """Audio examples of consecutive samples, at the same indices as the FrameChunks."""

    start_index: int  # index i of the first sample
    examples: np.ndarray  # [n, 96, 64] float32 log-mel, one per rgb sample


def iter_frame_chunks(
    source: str | BinaryIO,
    *,
    fps: float = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    frame_size: tuple[int, int] | None = None,
    chunk_frames: int = 32,
    report: DecodeReport | None = None,
    decode: str = DECODE_EXACT,
    decode_device: str = DEVICE_CPU,
) -> Iterator[FrameChunk]:
    """Yield the samples of `source` (a path, or a binary file object with read/seek/tell).

    max_frames caps the samples (0: no cap) and decoding stops once it is reached.
    frame_size is (height, width) to squash every upright frame to; None keeps the first
    frame's size. Chunks hold at most chunk_frames samples, so memory stays bounded.
    A file that breaks after some frames ends the iterator early with report.truncated set;
    one that yields no frame raises VideoDecodeError on the first next().
    decode is "exact" or "fast", decode_device "cpu", "gpu" or "auto" (module docstring).
    """
    return iter_media_chunks(
        source,
        fps=fps,
        max_frames=max_frames,
        frame_size=frame_size,
        chunk_frames=chunk_frames,
        report=report,
        audio=False,
        decode=decode,
        decode_device=decode_device,
    )


def iter_media_chunks(
    source: str | BinaryIO,
    *,
    fps: float = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    frame_size: tuple[int, int] | None = None,
    chunk_frames: int = 32,
    report: DecodeReport | None = None,
    audio: bool = True,
    views: Sequence[View] = (),
    decode: str = DECODE_EXACT,
    decode_device: str = DEVICE_CPU,
) -> Iterator[FrameChunk | AudioChunk | ViewChunk]:
    """As iter_frame_chunks, and with audio=True also AudioChunks from the same pass; with
    views (features.clips) also each view's ViewChunks.

    The FrameChunks are exactly iter_frame_chunks'. AudioChunk k covers the same sample
    indices as FrameChunk k but may come a little later (its audio must arrive first);
    report.has_audio and report.audio_truncated are final once the iterator ends. A view's
    chunks (view.chunk samples each) cover the samples in order from 0, one row per sample;
    one may come some frames after the FrameChunk that holds its samples (it waits for its
    look-ahead frames), and none comes before it when view.chunk == chunk_frames. When
    max_frames stops the samples, decoding goes on for the last clips' look-ahead frames.
    """
    if not fps > 0:
        raise ValueError(f"fps={fps}: must be positive")
    if max_frames < 0:
        raise ValueError(f"max_frames={max_frames}: must be >= 0 (0: no cap)")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames={chunk_frames}: must be >= 1")
    if frame_size is not None and min(frame_size) < 1:
        raise ValueError(f"frame_size={frame_size}: height and width must be >= 1")
    if decode not in DECODE_MODES:
        raise ValueError(f"decode={decode!r}: choose from {', '.join(DECODE_MODES)}")
    if decode == DECODE_FAST and any(isinstance(view, ClipView) for view in views):
        raise ValueError("decode='fast' skips frames that clip views (flow, i3d, c3d) need")
    gpu = use_gpu(decode_device)  # checked now, not on first next()
    rate = Fraction(fps).limit_denominator(1_000_000)
    cap = max_frames or math.inf
    track = ViewTrack(views) if views else None  # checks the views now, not on first next()
    sampling = _Sampling(rate, cap, frame_size, chunk_frames, decode == DECODE_FAST)
    report = report if report is not None else DecodeReport()
    return _iter_chunks(source, sampling, report, audio, track, gpu)


@dataclass(frozen=True)
class _Sampling:
    """Which samples to take and how to hand them out."""

    rate: Fraction  # samples per second
    cap: float  # most samples (math.inf: no cap)
    frame_size: tuple[int, int] | None
    chunk_frames: int
    fast: bool


def _iter_chunks(
    source: str | BinaryIO,
    sampling: _Sampling,
    report: DecodeReport,
    audio: bool,
    views: ViewTrack | None,
    gpu: bool,
) -> Iterator[FrameChunk | AudioChunk | ViewChunk]:
    name = source if isinstance(source, str) else getattr(source, "name", "<file object>")
    if gpu:
        try:
            yield from _decode_file(source, name, sampling, report, audio, views, gpu=True)
            return
        except GpuRefusedError:  # raised before anything came out: start again on the CPU
            report.restart_on_cpu()
            if not isinstance(source, str):
                source.seek(0)
    yield from _decode_file(source, name, sampling, report, audio, views, gpu=False)


def _decode_file(
    source: str | BinaryIO,
    name: str,
    sampling: _Sampling,
    report: DecodeReport,
    audio: bool,
    views: ViewTrack | None,
    gpu: bool,
) -> Iterator[FrameChunk | AudioChunk | ViewChunk]:
    with open_container(source, name, report, gpu) as container:
        track = None
        if audio:
            track = AudioTrack(container.streams.audio[0] if container.streams.audio else None)
        yield from _chunks(container, name, sampling, report, track, views)


def _chunks(
    container: av.container.InputContainer,
    name: str,
    sampling: _Sampling,
    report: DecodeReport,
    track: AudioTrack | None,
    views: ViewTrack | None,
) -> Iterator[FrameChunk | AudioChunk | ViewChunk]:
    chunk_frames = sampling.chunk_frames
    with closing(timed_frames(container, name, report, track, sampling.fast)) as decoded:
        sampler = _Sampler(sampling, report, track, views)
        for index, (frame, t) in enumerate(decoded):  # index: the source frame's
            if frame is None:  # fast mode: the last frames were skipped, up to time t
                yield from sampler.until(t, None)
                continue  # the end: timed_frames still checks the header's duration
            if views is not None:
                views.add_frame(frame)
            yield from sampler.until(t, (frame, t, index))
            yield from _audio_chunks(track, chunk_frames)
            if views is not None:
                yield from views.take()
            # Past the cap, decoding goes on only while the last clips wait for look-ahead.
            if report.frames >= sampling.cap and not (views is not None and views.waiting):
                break
        yield from sampler.finish()
    if views is not None:
        views.finish()
        report.views_peak_buffered = views.peak_buffered
        report.view_conversions = views.conversions
        yield from views.take(final=True)
    if track is not None:
        _finish_audio(container, track, report, capped=report.frames >= sampling.cap)
        yield from _audio_chunks(track, chunk_frames)
        yield from _audio_chunks(track, None)


def _audio_chunks(track: AudioTrack | None, count: int | None) -> Iterator[AudioChunk]:
    """The audio examples cut so far, `count` at a time (None: all that are left)."""
    while track is not None and (taken := track.take(count)) is not None:
        yield AudioChunk(*taken)


def _finish_audio(
    container: av.container.InputContainer, track: AudioTrack, report: DecodeReport, capped: bool
) -> None:
    """After the video: when the frame cap stopped it early, demux on while the last samples
    wait for their audio; then drain the audio and fill in the report."""
    if capped and not report.truncated:
        track.demux_rest(container)
    cut_file_end = None
    if report.truncated and container.duration:
        cut_file_end = float(((container.start_time or 0) + container.duration) * AV_TIME_BASE)
    track.finish(read_to_end=not capped, cut_file_end_s=cut_file_end)
    report.has_audio = track.has_audio
    report.audio_truncated = track.truncated
    report.audio_error = track.error
    report.audio_peak_buffered = track.peak_buffered


class _Sampler:
    """Sample i is the decoded frame nearest to i / rate: as each frame arrives, the samples
    before its time are settled, each the nearer of the previous frame and this one."""

    def __init__(
        self,
        sampling: _Sampling,
        report: DecodeReport,
        track: AudioTrack | None,
        views: ViewTrack | None,
    ) -> None:
        self._sampling, self._report, self._track, self._views = sampling, report, track, views
        self._converter: UprightConverter | None = None
        self._batch = _Batch(0)
        # (frame, its time, its source index) of the latest decoded frame
        self._previous: tuple[av.VideoFrame, Fraction, int] | None = None

    def until(
        self, t: Fraction, current: tuple[av.VideoFrame, Fraction, int] | None
    ) -> Iterator[FrameChunk]:
        """The samples before time t; current is the frame decoded at t, None when the frames
        up to t were skipped (fast mode's end), so the previous frame is the nearest."""
        report, rate = self._report, self._sampling.rate
        previous = self._previous
        while previous and report.frames < self._sampling.cap and report.frames / rate < t:
            target = Fraction(report.frames) / rate
            use_previous = current is None or target - previous[1] <= t - target
            yield from self._add(target, previous if use_previous else current)
        if current is not None:
            self._previous = current

    def finish(self) -> Iterator[FrameChunk]:
        """A single instant (span 0) still gives its one sample; then the last chunk."""
        if self._report.frames == 0 and self._previous is not None:
            yield from self._add(Fraction(0), self._previous)
        if len(self._batch):
            yield self._batch.chunk()

    def _add(
        self, target: Fraction, chosen: tuple[av.VideoFrame, Fraction, int]
    ) -> Iterator[FrameChunk]:
        frame, frame_t, index = chosen
        report = self._report
        size = self._sampling.frame_size or (report.height, report.width)
        self._converter = self._converter or UprightConverter(size)
        self._batch.add(self._converter.rgb(frame), target, frame_t)
        report.max_sample_error_s = max(report.max_sample_error_s, float(abs(frame_t - target)))
        report.frames += 1
        if self._track is not None:
            self._track.add_sample(float(target))
        if self._views is not None:
            self._views.add_sample(index)
        if len(self._batch) == self._sampling.chunk_frames:
            yield self._batch.chunk()
            self._batch = _Batch(report.frames)


class _Batch:
    """Samples gathered for one FrameChunk."""

    def __init__(self, start_index: int) -> None:
        self.start_index = start_index
        self._frames: list[np.ndarray] = []
        self._targets: list[float] = []
        self._times: list[float] = []

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, rgb: np.ndarray, target: Fraction, frame_time: Fraction) -> None:
        self._frames.append(rgb)
        self._targets.append(float(target))
        self._times.append(float(frame_time))

    def chunk(self) -> FrameChunk:
        return FrameChunk(
            start_index=self.start_index,
            frames=np.stack(self._frames),
            timestamps_s=np.asarray(self._targets, np.float64),
            frame_times_s=np.asarray(self._times, np.float64),
        )
