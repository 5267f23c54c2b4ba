"""Decode a video into RGB frames sampled at a fixed rate, streamed in small chunks.

Sampling contract: the timeline runs from the first decoded frame's timestamp (t = 0) to the
last's (t = span). Sample i, for i = 0 ... ceil(span * fps) - 1 (at least one sample when any
frame decodes), is the decoded frame nearest to t = i / fps; a tie goes to the earlier frame.
Times are exact rationals (pts * time_base), so a 30 fps video sampled at 30 fps yields every
frame once. Every target lies before the last frame, so choosing between the previous and the
current frame while streaming is exact and needs no duration header.

The decoder runs straight through (frame threading, no seeks) and only chosen frames are
converted to RGB. Display-matrix rotation is applied, so frames come out upright.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from features.formats import DEFAULT_FPS, DEFAULT_MAX_FRAMES

EMPTY_FILE = "empty_file"
NOT_A_VIDEO = "not_a_video"
NO_VIDEO_STREAM = "no_video_stream"
NO_DECODABLE_FRAMES = "no_decodable_frames"

_AV_TIME_BASE = Fraction(1, 1_000_000)  # unit of container.duration and container.start_time
# FFmpeg's own guess when a raw stream states no frame rate.
_FALLBACK_RATE = Fraction(25)
# A header's end may outlast the last frame by that frame's duration or by a longer audio
# track; only a bigger gap means the file was cut.
_TRUNCATION_SLACK_S = 1


# FFmpeg renders any text file as ANSI art through its "tty" demuxer; text is never a video.
_TEXT_FORMATS = frozenset({"tty"})


class VideoDecodeError(Exception):
    """A video that yields no frames at all; `reason` is one of the four module constants."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FrameChunk:
    """Consecutive samples; chunk k + 1 starts where chunk k ends."""

    start_index: int  # index i of the first sample
    frames: np.ndarray  # [n, H, W, 3] uint8 RGB, upright
    timestamps_s: np.ndarray  # [n] float64: target times i / fps, what pipelines key on
    frame_times_s: np.ndarray  # [n] float64: times of the decoded frames chosen, from the first


@dataclass
class DecodeReport:
    """What decoding found, filled in while the chunks flow; final once the iterator ends."""

    frames: int = 0  # samples emitted
    decoded_frames: int = 0  # frames the decoder produced, chosen or not
    truncated: bool = False  # frames decoded, then the file broke off
    error: str = ""  # why decoding stopped early or failed
    span_s: float = 0.0  # last decoded frame time - first (only as far as decoding went)
    width: int = 0  # upright size of the first decoded frame, before any resize
    height: int = 0
    rotation: int = 0  # degrees counter-clockwise applied to the stored picture (PyAV's sign)


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
    return _iter_chunks(source, rate, cap, frame_size, chunk_frames, report)


def _iter_chunks(
    source: str | BinaryIO,
    rate: Fraction,
    cap: float,
    frame_size: tuple[int, int] | None,
    chunk_frames: int,
    report: DecodeReport | None,
) -> Iterator[FrameChunk]:
    report = report if report is not None else DecodeReport()
    name = source if isinstance(source, str) else getattr(source, "name", "<file object>")
    with (
        _open(source, name, report) as container,
        closing(_timed_frames(container, name, report)) as timed_frames,
    ):
        converter: _Converter | None = None
        batch = _Batch(0)
        previous: tuple[av.VideoFrame, Fraction] | None = None
        for frame, t in timed_frames:
            converter = converter or _Converter(frame_size or (report.height, report.width))
            if previous is not None:
                while report.frames < cap and Fraction(report.frames) / rate < t:
                    target = Fraction(report.frames) / rate
                    use_previous = target - previous[1] <= t - target
                    chosen, chosen_t = previous if use_previous else (frame, t)
                    batch.add(converter.rgb(chosen), target, chosen_t)
                    report.frames += 1
                    if len(batch) == chunk_frames:
                        yield batch.chunk()
                        batch = _Batch(report.frames)
                if report.frames >= cap:
                    break
            previous = (frame, t)
        if report.frames == 0 and previous is not None:
            # A single instant (span 0) still gives its one sample.
            batch.add(converter.rgb(previous[0]), Fraction(0), previous[1])
            report.frames = 1
        if len(batch):
            yield batch.chunk()


def _open(source: str | BinaryIO, name: str, report: DecodeReport) -> av.container.InputContainer:
    if _is_empty(source):
        raise _fail(report, EMPTY_FILE, f"{name}: empty file (0 bytes)")
    try:
        container = av.open(source, mode="r")
    except av.error.FFmpegError as error:
        raise _fail(report, NOT_A_VIDEO, f"{name}: not a media container ({error})") from error
    if container.format.name in _TEXT_FORMATS:
        container.close()
        raise _fail(report, NOT_A_VIDEO, f"{name}: text, not a video ({container.format.name})")
    return container


def _is_empty(source: str | BinaryIO) -> bool:
    if isinstance(source, str):
        return os.path.getsize(source) == 0
    # Seek, don't read: a remote reader fetches a whole buffer (16 MiB for GCS) on a read and
    # drops it on the seek back, so a probing read(1) downloads a small video twice.
    position = source.tell()
    size = source.seek(0, os.SEEK_END)
    source.seek(position)
    return size == 0


def _timed_frames(
    container: av.container.InputContainer, name: str, report: DecodeReport
) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """Yield (frame, seconds since the first frame), in order; set report.truncated on a break."""
    if not container.streams.video:
        raise _fail(report, NO_VIDEO_STREAM, f"{name}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frame_period = 1 / (stream.guessed_rate or stream.average_rate or _FALLBACK_RATE)
    first: Fraction | None = None
    last = Fraction(0)
    for frame in _decode(container, stream, report):
        report.decoded_frames += 1
        if frame.pts is not None and frame.time_base is not None:
            t = frame.pts * frame.time_base
        else:  # raw elementary streams: count frames at the stream's rate
            t = Fraction(0) if first is None else first + last + frame_period
        if first is None:
            first = t
            report.rotation = frame.rotation
            turned = _quarter_turns(frame.rotation) % 2
            report.height, report.width = (
                (frame.width, frame.height) if turned else (frame.height, frame.width)
            )
        elif t - first <= last:
            continue  # out of order or repeated timestamp: not a later picture
        last = t - first
        report.span_s = float(last)
        yield frame, last
    if first is None:
        report.truncated = False
        cause = f" ({report.error})" if report.error else ""
        raise _fail(report, NO_DECODABLE_FRAMES, f"{name}: no frame could be decoded{cause}")
    if report.truncated:
        report.error = f"{name}: broken data after {report.decoded_frames} frames ({report.error})"
        return
    end = _header_end(container, stream)
    if end is not None and first + last + _TRUNCATION_SLACK_S < end:
        report.truncated = True
        report.error = (
            f"{name}: data ends at {float(first + last):.3f} s but the header promises "
            f"{float(end):.3f} s"
        )


def _decode(
    container: av.container.InputContainer, stream: av.VideoStream, report: DecodeReport
) -> Iterator[av.VideoFrame]:
    """Decode packets in order; on a broken packet drain what the decoder holds, then stop."""
    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except av.error.FFmpegError as error:
        report.error = str(error)  # _timed_frames words it once it knows what came out
        report.truncated = True
        # Frame threads may still hold good frames decoded before the break; if draining fails
        # too, what came out is all there is.
        with suppress(av.error.FFmpegError):
            yield from stream.decode(None)


def _header_end(container: av.container.InputContainer, stream: av.VideoStream) -> Fraction | None:
    """Where the container's header says the video ends, in seconds; None when it does not say."""
    if stream.duration and stream.time_base:
        return ((stream.start_time or 0) + stream.duration) * stream.time_base
    if container.duration:
        return ((container.start_time or 0) + container.duration) * _AV_TIME_BASE
    return None


def _quarter_turns(rotation: int) -> int:
    return round(rotation / 90) % 4


def _fail(report: DecodeReport, reason: str, message: str) -> VideoDecodeError:
    report.error = message
    return VideoDecodeError(reason, message)


class _Converter:
    """Turns chosen frames into upright RGB of one size; a frame chosen twice converts once."""

    def __init__(self, size_hw: tuple[int, int]) -> None:
        self._size_hw = size_hw
        self._reformatter = VideoReformatter()  # reuses one swscale context across frames
        self._last: tuple[av.VideoFrame, np.ndarray] | None = None

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:  # [H, W, 3] uint8
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        turns = _quarter_turns(frame.rotation)
        # Squashing commutes with quarter turns: scale the stored picture to the turned size.
        height, width = self._size_hw[::-1] if turns % 2 else self._size_hw
        stored = self._reformatter.reformat(frame, width=width, height=height, format="rgb24")
        rgb = np.rot90(stored.to_ndarray(), turns)
        self._last = (frame, rgb)
        return rgb


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
