"""Open a media file and decode its video stream into timed frames, noting what went wrong.

The demuxer runs straight through (frame threading, no seeks); timestamps are exact
rationals (pts * time_base) counted from the first frame, and a frame whose time is not
later than the one before is dropped. A first audio stream, when wanted, is demuxed in the
same pass and handed to an AudioTrack (features.audio_stream).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av

from features.audio_stream import AudioTrack
from features.upright import quarter_turns

EMPTY_FILE = "empty_file"
NOT_A_VIDEO = "not_a_video"
NO_VIDEO_STREAM = "no_video_stream"
NO_DECODABLE_FRAMES = "no_decodable_frames"

AV_TIME_BASE = Fraction(1, 1_000_000)  # unit of container.duration and container.start_time
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
class DecodeReport:
    """What decoding found, filled in while the chunks flow; final once the iterator ends."""

    frames: int = 0  # samples emitted
    # Frames the decoder produced, chosen or not; with views and a max_frames cap this and
    # span_s include the last clips' look-ahead frames.
    decoded_frames: int = 0
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
    # Only filled in when views are cut (iter_media_chunks(views=...)):
    views_peak_buffered: int = 0  # most decoded frames the views held at once
    view_conversions: int = 0  # frames the views converted to RGB, over all their sizes


def open_container(
    source: str | BinaryIO, name: str, report: DecodeReport
) -> av.container.InputContainer:
    if _is_empty(source):
        raise fail(report, EMPTY_FILE, f"{name}: empty file (0 bytes)")
    try:
        container = av.open(source, mode="r")
    except av.error.FFmpegError as error:
        raise fail(report, NOT_A_VIDEO, f"{name}: not a media container ({error})") from error
    if container.format.name in _TEXT_FORMATS:
        container.close()
        raise fail(report, NOT_A_VIDEO, f"{name}: text, not a video ({container.format.name})")
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


def timed_frames(
    container: av.container.InputContainer,
    name: str,
    report: DecodeReport,
    track: AudioTrack | None = None,
) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """Yield (frame, seconds since the first frame), in order; set report.truncated on a break."""
    if not container.streams.video:
        raise fail(report, NO_VIDEO_STREAM, f"{name}: no video stream")
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
            turned = quarter_turns(frame.rotation) % 2
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
        raise fail(report, NO_DECODABLE_FRAMES, f"{name}: no frame could be decoded{cause}")
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
        report.error = str(error)  # timed_frames words it once it knows what came out
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
        return ((container.start_time or 0) + container.duration) * AV_TIME_BASE
    return None


def fail(report: DecodeReport, reason: str, message: str) -> VideoDecodeError:
    report.error = message
    return VideoDecodeError(reason, message)
