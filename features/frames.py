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
from features.clips import View, ViewChunk, ViewTrack
from features.decoding import (
    AV_TIME_BASE,
    EMPTY_FILE,
    NO_DECODABLE_FRAMES,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    DecodeReport,
    VideoDecodeError,
    open_container,
    timed_frames,
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
) -> Iterator[FrameChunk]:
    """Yield the samples of `source` (a path, or a binary file object with read/seek/tell).

    max_frames caps the samples (0: no cap) and decoding stops once it is reached.
    frame_size is (height, width) to squash every upright frame to; None keeps the first
    frame's size. Chunks hold at most chunk_frames samples, so memory stays bounded.
    A file that breaks after some frames ends the iterator early with report.truncated set;
    one that yields no frame raises VideoDecodeError on the first next().
    """
    return iter_media_chunks(
        source,
        fps=fps,
        max_frames=max_frames,
        frame_size=frame_size,
        chunk_frames=chunk_frames,
        report=report,
        audio=False,
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
    rate = Fraction(fps).limit_denominator(1_000_000)
    cap = max_frames or math.inf
    track = ViewTrack(views) if views else None  # checks the views now, not on first next()
    return _iter_chunks(source, rate, cap, frame_size, chunk_frames, report, audio, track)


def _iter_chunks(
    source: str | BinaryIO,
    rate: Fraction,
    cap: float,
    frame_size: tuple[int, int] | None,
    chunk_frames: int,
    report: DecodeReport | None,
    audio: bool,
    views: ViewTrack | None,
) -> Iterator[FrameChunk | AudioChunk | ViewChunk]:
    report = report if report is not None else DecodeReport()
    name = source if isinstance(source, str) else getattr(source, "name", "<file object>")
    with open_container(source, name, report) as container:
        track = None
        if audio:
            track = AudioTrack(container.streams.audio[0] if container.streams.audio else None)
        yield from _chunks(
            container, name, rate, cap, frame_size, chunk_frames, report, track, views
        )


def _chunks(
    container: av.container.InputContainer,
    name: str,
    rate: Fraction,
    cap: float,
    frame_size: tuple[int, int] | None,
    chunk_frames: int,
    report: DecodeReport,
    track: AudioTrack | None,
    views: ViewTrack | None,
) -> Iterator[FrameChunk | AudioChunk | ViewChunk]:
    with closing(timed_frames(container, name, report, track)) as decoded:
        converter: UprightConverter | None = None
        batch = _Batch(0)
        previous: tuple[av.VideoFrame, Fraction] | None = None
        for index, (frame, t) in enumerate(decoded):  # index: the source frame's
            converter = converter or UprightConverter(frame_size or (report.height, report.width))
            if views is not None:
                views.add_frame(frame)
            if previous is not None:
                while report.frames < cap and Fraction(report.frames) / rate < t:
                    target = Fraction(report.frames) / rate
                    use_previous = target - previous[1] <= t - target
                    chosen, chosen_t = previous if use_previous else (frame, t)
                    batch.add(converter.rgb(chosen), target, chosen_t)
                    report.frames += 1
                    if track is not None:
                        track.add_sample(float(target))
                    if views is not None:
                        views.add_sample(index - 1 if use_previous else index)
                    if len(batch) == chunk_frames:
                        yield batch.chunk()
                        batch = _Batch(report.frames)
            previous = (frame, t)
            yield from _audio_chunks(track, chunk_frames)
            if views is not None:
                yield from views.take()
            # Past the cap, decoding goes on only while the last clips wait for look-ahead.
            if report.frames >= cap and not (views is not None and views.waiting):
                break
        if report.frames == 0 and previous is not None:
            # A single instant (span 0) still gives its one sample.
            batch.add(converter.rgb(previous[0]), Fraction(0), previous[1])
            report.frames = 1
            if track is not None:
                track.add_sample(0.0)
            if views is not None:
                views.add_sample(0)
        if len(batch):
            yield batch.chunk()
    if views is not None:
        views.finish()
        report.views_peak_buffered = views.peak_buffered
        report.view_conversions = views.conversions
        yield from views.take(final=True)
    if track is not None:
        _finish_audio(container, track, report, capped=report.frames >= cap)
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
