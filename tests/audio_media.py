"""Real media files with chosen audio for tests: any rate, channel layout, length and start.

features.synthetic_video writes a 48 kHz mono tone as long as the video; audio tests need
tracks that are shorter, longer, later, multichannel or absent, so they write their own.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

_AAC_FRAME = 1024  # samples per AAC frame; the encoder takes no other size but the last


def tone(frequency_hz: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine wave: [seconds * rate] float32."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def noise(seconds: float, rate: int, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """Uniform white noise: [seconds * rate] float32."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-amplitude, amplitude, round(seconds * rate)).astype(np.float32)


def write_media(
    path: str,
    *,
    audio: np.ndarray | None = None,
    rate: int = 48_000,
    layout: str = "mono",
    audio_start_s: float = 0.0,
    video_seconds: float = 0.0,
    fps: float = 30.0,
    timestamps_s: list[float] | None = None,
    audio_codec: str | None = None,
) -> None:
    """Mux a small grey video and/or an audio track into `path` (the extension picks the muxer).

    audio: [n] mono signal, copied to every channel of `layout`; AAC unless the file is .wav
    or audio_codec says otherwise (pcm_s16le).
    video_seconds / fps: a constant-rate video of that length (0: no video), unless
    timestamps_s gives each frame's time (variable frame rate).
    Packets are written in time order, second by second, as real muxers interleave them.
    """
    codec = audio_codec or ("pcm_s16le" if path.endswith(".wav") else "aac")
    with av.open(path, mode="w") as container:
        video = None
        if video_seconds or timestamps_s:
            video = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1000))
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            video.codec_context.time_base = Fraction(1, 1000)
        sound = None
        if audio is not None:
            sound = container.add_stream(codec, rate=rate, layout=layout)
        times = []
        if video is not None:
            times = timestamps_s or [i / fps for i in range(round(video_seconds * fps))]
        blocks = []
        if sound is not None:
            blocks = list(
                _audio_frames(audio, rate, layout, audio_start_s, codec.startswith("pcm"))
            )
        index = 0
        for time_s, frame in _in_time_order(times, blocks):
            if frame is None:
                pixels = np.full((32, 32, 3), (index * 8) % 256, np.uint8)
                picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                picture.pts, picture.time_base = round(time_s * 1000), Fraction(1, 1000)
                container.mux(video.encode(picture))
                index += 1
            else:
                container.mux(sound.encode(frame))
        if video is not None:
            container.mux(video.encode())
        if sound is not None:
            container.mux(sound.encode())


def _in_time_order(times: list[float], blocks: list[tuple[float, av.AudioFrame]]):
    """(time, None) per video frame and (time, frame) per audio frame, by time."""
    items = [(time_s, 0, None) for time_s in times]
    items += [(time_s, 1, frame) for time_s, frame in blocks]
    items.sort(key=lambda item: item[:2])
    return [(time_s, frame) for time_s, _, frame in items]


def _audio_frames(audio, rate, layout, start_s, pcm):
    channels = av.AudioLayout(layout).nb_channels
    offset = round(start_s * rate)
    for start in range(0, len(audio), _AAC_FRAME):
        block = np.tile(audio[start : start + _AAC_FRAME], (channels, 1))  # [channels, n]
        if pcm:
            interleaved = (block.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
        else:
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts, frame.time_base = offset + start, Fraction(1, rate)
        yield (offset + start) / rate, frame
