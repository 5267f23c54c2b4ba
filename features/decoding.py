"""Open a media file and decode its video stream into timed frames, noting what went wrong.

The demuxer runs straight through (frame threading, no seeks); timestamps are exact
rationals (pts * time_base) counted from the first frame, and a frame whose time is not
later than the one before is dropped. A first audio stream, when wanted, is demuxed in the
same pass and handed to an AudioTrack (features.audio_stream).

Decode modes: "exact" decodes every frame. "fast" has FFmpeg skip the frames no other frame
references (skip_frame NONREF: in H.264 and HEVC with B-frames, most B-frames), so fewer
frames come out, each bit-identical to exact mode's; the timeline still ends at the last
frame's timestamp, read from the packets. Streams without timestamps (raw elementary
streams) decode as exact: a skipped frame's time could not be known. VP9 ignores the skip.

Devices: "cpu" is FFmpeg's software decoder; "gpu" decodes on an NVIDIA GPU (NVDEC) through
FFmpeg's CUDA hwaccel (PyAV's HWAccel), frames copied back to memory as they come out.
A video whose codec or profile the GPU refuses raises GpuRefusedError before any frame comes out,
so the caller can decode it again on the CPU.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import BinaryIO

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

from features.audio_stream import AudioTrack
from features.upright import quarter_turns

EMPTY_FILE = "empty_file"
NOT_A_VIDEO = "not_a_video"
NO_VIDEO_STREAM = "no_video_stream"
NO_DECODABLE_FRAMES = "no_decodable_frames"

DECODE_EXACT = "exact"
DECODE_FAST = "fast"
DECODE_MODES = (DECODE_EXACT, DECODE_FAST)
DEVICE_AUTO = "auto"  # the GPU when this process has one that decodes H.264, else the CPU
DEVICE_CPU = "cpu"
DEVICE_GPU = "gpu"
DECODE_DEVICES = (DEVICE_AUTO, DEVICE_CPU, DEVICE_GPU)
# NONREF, not BIDIR: a non-reference frame is one nothing else is predicted from, so skipping
# it cannot change another frame, whatever the encoder. BIDIR (every B-frame) decodes fewer
# frames again but corrupts the P-frames of streams whose B-frames are references for them
# (benchmarks/decode_modes.py measures both).
FAST_SKIP_FRAME = "NONREF"

AV_TIME_BASE = Fraction(1, 1_000_000)  # unit of container.duration and container.start_time
# FFmpeg's own guess when a raw stream states no frame rate.
_FALLBACK_RATE = Fraction(25)
# A header's end may outlast the last frame by that frame's duration or by a longer audio
# track; only a bigger gap means the file was cut.
_TRUNCATION_SLACK_S = 1


# FFmpeg renders any text file as ANSI art through its "tty" demuxer; text is never a video.
_TEXT_FORMATS = frozenset({"tty"})


class GpuRefusedError(Exception):
    """The GPU cannot decode this video (codec, profile or size): decode it on the CPU."""


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
    # Largest |chosen frame's time - sample time| over the samples, in seconds: at most half
    # a frame period in exact mode on a constant-rate video, more where frames are skipped.
    max_sample_error_s: float = 0.0
    skipped_frames: bool = False  # fast mode's skip was in force (timestamped stream)
    gpu_decoded: bool = False  # the frames came from the GPU's decoder
    gpu_fallback: bool = False  # the GPU refused the video; it was decoded on the CPU

    def restart_on_cpu(self) -> None:
        """Forgets a refused GPU attempt (nothing came out of it) before the CPU decode."""
        for field in fields(self):
            setattr(self, field.name, field.default)
        self.gpu_fallback = True


def open_container(
    source: str | BinaryIO, name: str, report: DecodeReport, gpu: bool = False
) -> av.container.InputContainer:
    """The open container; with gpu, its first video stream decodes on the GPU (else
    GpuRefusedError)."""
    if _is_empty(source):
        raise fail(report, EMPTY_FILE, f"{name}: empty file (0 bytes)")
    try:
        container = av.open(source, mode="r", hwaccel=gpu_accel() if gpu else None)
    except (av.error.FFmpegError, RuntimeError) as error:
        if gpu:  # PyAV's RuntimeError: no stream has a GPU decoder; the CPU may still read it
            raise GpuRefusedError(str(error)) from error
        raise fail(report, NOT_A_VIDEO, f"{name}: not a media container ({error})") from error
    if container.format.name in _TEXT_FORMATS:
        container.close()
        raise fail(report, NOT_A_VIDEO, f"{name}: text, not a video ({container.format.name})")
    video = container.streams.video
    if gpu and not (video and video[0].codec_context and video[0].codec_context.is_hwaccel):
        container.close()  # another stream took the GPU; this one would decode in software
        raise GpuRefusedError(f"{name}: the GPU has no decoder for its first video stream")
    report.gpu_decoded = gpu
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
    fast: bool = False,
) -> Iterator[tuple[av.VideoFrame | None, Fraction]]:
    """Yield (frame, seconds since the first frame), in order; set report.truncated on a break.

    With fast, a last (None, t) may follow: frames were skipped after the last decoded one,
    up to time t, the last frame's timestamp."""
    if not container.streams.video:
        raise fail(report, NO_VIDEO_STREAM, f"{name}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frame_period = 1 / (stream.guessed_rate or stream.average_rate or _FALLBACK_RATE)
    first: Fraction | None = None
    last = Fraction(0)
    packets = _PacketClock(stream, fast)
    for frame in _decode(container, stream, report, track, packets):
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
        if report.gpu_decoded:
            raise GpuRefusedError(
                f"{name}: no frame came out of the GPU's decoder ({report.error})"
            )
        report.truncated = False
        cause = f" ({report.error})" if report.error else ""
        raise fail(report, NO_DECODABLE_FRAMES, f"{name}: no frame could be decoded{cause}")
    if report.truncated:
        report.error = f"{name}: broken data after {report.decoded_frames} frames ({report.error})"
        return
    report.skipped_frames = packets.skipping
    if packets.skipping and packets.latest is not None and packets.latest - first > last:
        last = packets.latest - first
        report.span_s = float(last)
        yield None, last
    end = _header_end(container, stream)
    if end is not None and first + last + _TRUNCATION_SLACK_S < end:
        report.truncated = True
        report.error = (
            f"{name}: data ends at {float(first + last):.3f} s but the header promises "
            f"{float(end):.3f} s"
        )


class _PacketClock:
    """Fast mode: turns the skip on at the first video packet when packets carry timestamps,
    and keeps the latest packet time, so a timeline whose last frames were skipped still
    ends where exact mode's does."""

    def __init__(self, stream: av.VideoStream, fast: bool) -> None:
        self._stream = stream
        self._undecided = fast
        self.skipping = False
        self.latest: Fraction | None = None  # seconds, as pts * time_base

    def see(self, packet: av.Packet) -> None:
        if packet.is_discard:
            return  # an edit list's pre-roll: decoded for reference, never shown
        if packet.pts is None or packet.time_base is None:
            self._undecided = False  # no timestamp: a skipped frame's time could not be known
            return
        if self._undecided:
            self._stream.codec_context.skip_frame = FAST_SKIP_FRAME
            self._undecided, self.skipping = False, True
        if self.skipping:
            t = packet.pts * packet.time_base
            self.latest = t if self.latest is None else max(self.latest, t)


def _decode(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    report: DecodeReport,
    track: AudioTrack | None,
    packets: _PacketClock,
) -> Iterator[av.VideoFrame]:
    """Decode packets in order; on a broken packet drain what the decoder holds, then stop.

    With a track, the first audio stream is demuxed in the same pass and handed to it."""
    audio = () if track is None or track.stream is None else (track.stream,)
    try:
        for packet in container.demux(stream, *audio):
            if track is None or not track.route(packet):
                if packet.size:  # the demuxer's last, empty packet only flushes
                    packets.see(packet)
                yield from packet.decode()
    except av.error.FFmpegError as error:
        if report.gpu_decoded and not report.decoded_frames:
            raise GpuRefusedError(str(error)) from error  # the profile or size, most likely
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


def use_gpu(decode_device: str) -> bool:
    """Whether decode_device ("auto", "cpu", "gpu") decodes on the GPU in this process;
    "gpu" where there is none is a ValueError saying why."""
    if decode_device not in DECODE_DEVICES:
        raise ValueError(f"decode_device={decode_device!r}: choose from {DECODE_DEVICES}")
    if decode_device == DEVICE_CPU:
        return False
    problem = gpu_decode_problem()
    if problem and decode_device == DEVICE_GPU:
        raise ValueError(problem)
    return not problem


def gpu_accel() -> HWAccel:
    """NVDEC through FFmpeg's CUDA hwaccel, without a software fallback (a refusal is an
    error, so it can be counted), on CUDA's primary context: the one TensorFlow holds for the
    process, so opening a video creates no CUDA context of its own."""
    return HWAccel("cuda", allow_software_fallback=False, options={"primary_ctx": "1"})


@functools.cache
def gpu_decode_problem() -> str:
    """ "" when this process can decode H.264 on an NVIDIA GPU, else why not (one phrase).

    Decodes a tiny H.264 clip made on the spot: a CUDA device alone does not prove that the
    driver's NVDEC library is there. Cached: it is asked once per process."""
    if "cuda" not in hwdevices_available():
        return "this FFmpeg build has no CUDA hwaccel"
    try:
        gpu_accel().create(av.codec.Codec("h264", "r"))  # fails fast without a driver
        clip = _probe_clip()
        with av.open(io.BytesIO(clip), hwaccel=gpu_accel()) as container:
            stream = container.streams.video[0]
            decoded = sum(1 for _ in container.decode(stream)) if stream.codec_context else 0
    except (av.error.FFmpegError, RuntimeError, OSError, ValueError) as error:
        # ValueError: no libx264 in this FFmpeg build to make the probe clip with
        return f"no NVIDIA GPU decoder (NVDEC) here ({type(error).__name__}: {error})"
    return "" if decoded else "no NVIDIA GPU decoder (NVDEC) here: the probe clip gave no frame"


def _probe_clip() -> bytes:
    """Eight frames of 128x128 H.264 (libx264) in an mp4, in memory."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        for index in range(8):
            frame = av.VideoFrame(128, 128, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([index * 30 % 256]) * plane.buffer_size)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()
