"""Write real encoded videos from numpy frames, so tests and demos need no media files.

Frames are upright uint8 RGB arrays [H, W, 3]. The writer covers what real libraries throw at a
decoder: variable frame rate (explicit timestamps), phone-style rotation metadata, odd frame
sizes, an audio track, and any container FFmpeg can mux (picked from the file extension).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

# Clock for explicit (VFR) timestamps: exact for 24, 25, 30, 30000/1001, 50 and 60 fps, and
# within MPEG-4 Part 2's 16-bit limit. Matroska still rounds to its own 1 ms clock.
_VFR_TIME_BASE = Fraction(1, 60_000)
_AUDIO_FRAME_SAMPLES = 1024  # AAC's frame size
_INDEX_DIGITS = 3  # base-16 digits, one grey band each: 4096 frames told apart
# Extensions whose muxer is ISO-BMFF: "faststart" moves the index (moov) to the front.
_ISO_BMFF_EXTENSIONS = (".mp4", ".m4v", ".m4a", ".mov")


@dataclass(frozen=True)
class Sound:
    """A mono AAC track: a sine tone plus uniform white noise (either amplitude may be 0).

    The noise comes from a generator seeded by `seed`, so a track is reproducible.
    """

    tone_hz: float = 440.0
    tone_amplitude: float = 0.2
    noise_amplitude: float = 0.0
    seed: int = 0
    sample_rate: int = 48_000


@dataclass(frozen=True)
class Shape:
    """A filled shape to draw: a disc of radius `size` or a square of half-side `size`."""

    kind: str  # "disc" or "square"
    center_yx: tuple[float, float]  # pixels
    size: float  # pixels
    color: tuple[int, int, int]  # RGB


def render_shapes_frame(
    height: int,
    width: int,
    shapes: Sequence[Shape],
    *,
    background: tuple[int, int, int] = (0, 0, 0),
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """Draw `shapes` in order over a flat background -> [height, width, 3] uint8 RGB.

    `noise` ([height, width, 3] int16, optional) is added last, so one precomputed field can be
    reused across frames cheaply.
    """
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = background
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    for shape in shapes:
        dy = rows - shape.center_yx[0]
        dx = cols - shape.center_yx[1]
        if shape.kind == "disc":
            mask = dy * dy + dx * dx <= shape.size * shape.size
        elif shape.kind == "square":
            mask = (np.abs(dy) <= shape.size) & (np.abs(dx) <= shape.size)
        else:
            raise ValueError(f"shape kind {shape.kind!r}: expected 'disc' or 'square'")
        canvas[mask] = shape.color
    if noise is not None:
        canvas = np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return canvas


def render_index_frame(index: int, height: int, width: int) -> np.ndarray:
    """A frame showing `index` as grey bands, one per base-16 digit -> [height, width, 3] uint8.

    Levels sit 16 apart, so the index survives lossy coding and resizing: tests can tell
    exactly which source frame a decoder returned.
    """
    frame = np.empty((height, width, 3), np.uint8)
    bands = np.array_split(np.arange(width), _INDEX_DIGITS)
    for position, band in enumerate(bands):
        digit = (index >> (4 * (_INDEX_DIGITS - 1 - position))) & 15
        frame[:, band] = 16 * digit + 8
    return frame


def read_frame_index(rgb: np.ndarray) -> int:
    """The index drawn by render_index_frame, read back from a decoded [H, W, 3] frame."""
    index = 0
    for band in np.array_split(np.arange(rgb.shape[1]), _INDEX_DIGITS):
        core = band[len(band) // 4 : len(band) - len(band) // 4]  # away from blurred edges
        digit = round((float(rgb[:, core].mean()) - 8) / 16)
        index = 16 * index + min(max(digit, 0), 15)
    return index


def write_video(
    path: str,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 30.0,
    timestamps_s: Sequence[float] | None = None,
    rotation_degrees: int = 0,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    with_audio: bool = False,
    sound: Sound | None = None,
    faststart: bool = True,
) -> None:
    """Encode upright RGB frames ([H, W, 3] uint8 each) into `path`; the extension picks the muxer.

    timestamps_s: one presentation time per frame (strictly increasing) for variable frame rate;
        None spaces frames 1/fps apart from 0.
    rotation_degrees: store the picture the way a phone does: turned, with a display matrix
        asking players to rotate it back clockwise by this many degrees (the legacy `rotate`
        tag: 90 for a portrait phone video). A multiple of 90.
    pix_fmt: None picks yuv420p, or yuv444p for libx264 when a side is odd (libx264 needs even
        sides for 4:2:0; mpeg4 pads odd sides itself).
    with_audio: add an AAC sine tone (`Sound()`) as long as the video.
    sound: add this track instead, as long as the video.
    faststart: for mp4/mov, put the index before the media so a truncated file still decodes.
    """
    if rotation_degrees % 90:
        raise ValueError(f"rotation_degrees={rotation_degrees}: must be a multiple of 90")
    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    quarter_turns = (rotation_degrees // 90) % 4
    stored_height, stored_width = np.rot90(first, quarter_turns).shape[:2]
    if pix_fmt is None:
        odd = stored_height % 2 or stored_width % 2
        pix_fmt = "yuv444p" if codec == "libx264" and odd else "yuv420p"
    options = {"movflags": "faststart"} if faststart and _is_iso_bmff(path) else {}

    with av.open(path, mode="w", options=options) as container:
        rate = Fraction(fps).limit_denominator(100_000)
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = stored_width, stored_height, pix_fmt
        # libx264 writes the codec clock into the bitstream as its frame rate, which is all a raw
        # .h264 stream has to go by: keep it 1/fps unless timestamps need a finer clock.
        time_base = 1 / rate if timestamps_s is None else _VFR_TIME_BASE
        video.codec_context.time_base = time_base
        if codec == "libx264":
            # MB-tree makes this libx264 build's output vary run to run; without it a seeded
            # library is byte-for-byte reproducible. One thread: on frames this small, x264's
            # threads cost more than they give.
            video.codec_context.options = {"preset": "veryfast", "x264-params": "mbtree=0"}
            video.codec_context.thread_count = 1
        if quarter_turns:
            # PyAV's angle is counter-clockwise: the opposite of the `rotate` tag.
            video.set_display_rotation(-rotation_degrees)
        if sound is None and with_audio:
            sound = Sound()
        audio = _AudioTrack(container, sound) if sound is not None else None

        times = _frame_times(timestamps_s, fps)
        end_s = 0.0
        for index, rgb in enumerate(itertools.chain([first], frame_iter)):
            time_s = next(times, None)
            if time_s is None:
                raise ValueError(f"{path}: more frames than timestamps_s ({index})")
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(np.rot90(rgb, quarter_turns)), format="rgb24"
            )
            frame.pts = round(time_s / time_base)
            frame.time_base = time_base
            container.mux(video.encode(frame))
            end_s = time_s + 1.0 / fps
            if audio is not None:
                audio.write_until(time_s)
        if timestamps_s is not None and index + 1 != len(timestamps_s):
            raise ValueError(f"{path}: {index + 1} frames for {len(timestamps_s)} timestamps_s")
        container.mux(video.encode())
        if audio is not None:
            audio.write_until(end_s)
            audio.flush()


def write_audio(path: str, seconds: float, sound: Sound | None = None) -> None:
    """Write an audio-only file (default: an AAC sine tone), e.g. an .m4a: no video stream."""
    options = {"movflags": "faststart"} if _is_iso_bmff(path) else {}
    with av.open(path, mode="w", options=options) as container:
        audio = _AudioTrack(container, sound or Sound())
        audio.write_until(seconds)
        audio.flush()


def _is_iso_bmff(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in _ISO_BMFF_EXTENSIONS


def _frame_times(timestamps_s: Sequence[float] | None, fps: float) -> Iterator[float]:
    if timestamps_s is not None:
        if any(b <= a for a, b in itertools.pairwise(timestamps_s)):
            raise ValueError("timestamps_s must be strictly increasing")
        return iter(timestamps_s)
    return (index / fps for index in itertools.count())


class _AudioTrack:
    """A mono AAC `Sound`, encoded in step with the video so the muxer can interleave."""

    def __init__(self, container: av.container.OutputContainer, sound: Sound) -> None:
        self._container = container
        self._sound = sound
        self._rate = sound.sample_rate
        self._stream = container.add_stream("aac", rate=self._rate, layout="mono")
        self._noise = np.random.default_rng(sound.seed)
        self._samples = 0

    def write_until(self, seconds: float) -> None:
        sound = self._sound
        while self._samples < seconds * self._rate:
            t = (self._samples + np.arange(_AUDIO_FRAME_SAMPLES)) / self._rate
            wave = sound.tone_amplitude * np.sin(2 * np.pi * sound.tone_hz * t)
            if sound.noise_amplitude:
                amplitude = sound.noise_amplitude
                wave = wave + self._noise.uniform(-amplitude, amplitude, _AUDIO_FRAME_SAMPLES)
            samples = wave.astype(np.float32)[None, :]  # [1, 1024]: planar mono
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._samples
            frame.time_base = Fraction(1, self._rate)
            self._container.mux(self._stream.encode(frame))
            self._samples += _AUDIO_FRAME_SAMPLES

    def flush(self) -> None:
        self._container.mux(self._stream.encode())
