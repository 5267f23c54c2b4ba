"""Decode a video into RGB frames sampled at a fixed rate, streamed in small chunks.

Sampling contract: the timeline runs from the first decoded frame's timestamp (t = 0) to the
last's (t = span). Sample i, for i = 0 ... ceil(span * fps) - 1 (at least one sample when any
frame decodes), is the decoded frame nearest to t = i / fps; a tie goes to the earlier frame.
Times are exact rationals (pts * time_base), so a 30 fps video sampled at 30 fps yields every
frame once. Every target lies before the last frame, so choosing between the previous and the
current frame while streaming is exact and needs no duration header.

The decoder runs straight through (frame threading, no seeks) and only chosen frames are
converted to RGB. Display-matrix rotation is applied, so frames come out upright.

With audio=True (iter_media_chunks) the first audio stream is decoded from the same demuxer
pass, so the file is read once, and each sample also gets one 0.96 s log-mel example cut at
its time (features.audio_stream): exactly as many audio rows as rgb rows, silence where the
audio is shorter or absent.
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

from features.audio_stream import AudioTrack
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
class AudioChunk:
    """Audio examples of consecutive samples, at the same indices as the FrameChunks."""

    start_index: int  # index i of the first sample
    examples: np.ndarray  # [n, 96, 64] float32 log-mel, one per rgb sample


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
    # Only filled in when audio is decoded (iter_media_chunks(audio=True)):
    has_audio: bool = False  # the file has an audio stream (a silent one counts)
    audio_truncated: bool = False  # the audio broke off or ended before its header says
    audio_error: str = ""  # why the audio stopped early
    audio_peak_buffered: int = 0  # most 16 kHz samples held at once


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
) -> Iterator[FrameChunk | AudioChunk]:
    """As iter_frame_chunks, and with audio=True also AudioChunks from the same pass.

    The FrameChunks are exactly iter_frame_chunks'. AudioChunk k covers the same sample
    indices as FrameChunk k but may come a little later (its audio must arrive first);
    report.has_audio and report.audio_truncated are final once the iterator ends.
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
    return _iter_chunks(source, rate, cap, frame_size, chunk_frames, report, audio)


def _iter_chunks(
    source: str | BinaryIO,
    rate: Fraction,
    cap: float,
    frame_size: tuple[int, int] | None,
    chunk_frames: int,
    report: DecodeReport | None,
    audio: bool,
) -> Iterator[FrameChunk | AudioChunk]:
    report = report if report is not None else DecodeReport()
    name = source if isinstance(source, str) else getattr(source, "name", "<file object>")
    with _open(source, name, report) as container:
        track = None
        if audio:
            track = AudioTrack(container.streams.audio[0] if container.streams.audio else None)
        yield from _chunks(container, name, rate, cap, frame_size, chunk_frames, report, track)


def _chunks(
    container: av.container.InputContainer,
    name: str,
    rate: Fraction,
    cap: float,
    frame_size: tuple[int, int] | None,
    chunk_frames: int,
    report: DecodeReport,
    track: AudioTrack | None,
) -> Iterator[FrameChunk | AudioChunk]:
    with closing(_timed_frames(container, name, report, track)) as timed_frames:
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
                    if track is not None:
                        track.add_sample(float(target))
                    if len(batch) == chunk_frames:
                        yield batch.chunk()
                        batch = _Batch(report.frames)
                if report.frames >= cap:
                    break
            previous = (frame, t)
            yield from _audio_chunks(track, chunk_frames)
        if report.frames == 0 and previous is not None:
            # A single instant (span 0) still gives its one sample.
            batch.add(converter.rgb(previous[0]), Fraction(0), previous[1])
            report.frames = 1
            if track is not None:
                track.add_sample(0.0)
        if len(batch):
            yield batch.chunk()
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
        cut_file_end = float(((container.start_time or 0) + container.duration) * _AV_TIME_BASE)
    track.finish(read_to_end=not capped, cut_file_end_s=cut_file_end)
    report.has_audio = track.has_audio
    report.audio_truncated = track.truncated
    report.audio_error = track.error
    report.audio_peak_buffered = track.peak_buffered


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
    container: av.container.InputContainer,
    name: str,
    report: DecodeReport,
    track: AudioTrack | None = None,
) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """Yield (frame, seconds since the first frame), in order; set report.truncated on a break."""
    if not container.streams.video:
        raise _fail(report, NO_VIDEO_STREAM, f"{name}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frame_period = 1 / (stream.guessed_rate or stream.average_rate or _FALLBACK_RATE)
    first: Fraction | None = None
    last = Fraction(0)
    for frame in _decode(container, stream, report, track):
        report.decoded_frames += 1
        if frame.pts is not None and frame.time_base is not None:
            t = frame.pts * frame.time_base
        else:  # raw elementary streams: count frames at the stream's rate
            t = Fraction(0) if first is None else first + last + frame_period
        if first is None:
            first = t
            if track is not None:
                track.set_video_start(float(t))
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
    container: av.container.InputContainer,
    stream: av.VideoStream,
    report: DecodeReport,
    track: AudioTrack | None,
) -> Iterator[av.VideoFrame]:
    """Decode packets in order; on a broken packet drain what the decoder holds, then stop.

    With a track, the first audio stream is demuxed in the same pass and handed to it."""
    audio = () if track is None or track.stream is None else (track.stream,)
    try:
        for packet in container.demux(stream, *audio):
            if track is None or not track.route(packet):
                yield from packet.decode()
    except av.error.FFmpegError as error:
        report.error = str(error)  # _timed_frames words it once it knows what came out
        report.truncated = True
        if track is not None:
            track.stop(f"broken data ({error})")
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
