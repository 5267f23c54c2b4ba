"""Audio front end as VGGish defines it: 16 kHz mono samples -> log-mel -> 0.96 s examples.

The facts come from the published VGGish (tensorflow/models research/audioset: vggish_params,
mel_features, vggish_input): 25 ms periodic-Hann windows every 10 ms, STFT magnitudes with an
FFT of the next power of two (512 at 16 kHz), 64 HTK-mel triangles over 125-7500 Hz, and
log(mel + 0.01). Examples are 96 log-mel frames x 64 bands.

Unlike VGGish, which cuts audio into back-to-back examples, we cut one example per rgb sample
time (see `examples_at`), so a video has as many audio rows as rgb rows.
"""

from __future__ import annotations

import functools
import math
import os
from contextlib import suppress
from typing import BinaryIO, NamedTuple

import av
import numpy as np

SAMPLE_RATE = 16_000  # Hz; VGGish's input rate
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_SECONDS = 0.96  # 96 hops of 10 ms
EXAMPLE_FRAMES = 96
# What a log-mel bin holds when there is no sound at all: log(0 + LOG_OFFSET).
SILENCE_LOG_MEL = math.log(LOG_OFFSET)

# As features.frames: a header may overstate the end a little (padding, a longer video
# track); only a bigger gap means the file was cut.
_TRUNCATION_SLACK_S = 1.0

# HTK mel scale: mel(f) = 1127 ln(1 + f / 700).
_MEL_Q = 1127.0
_MEL_BREAK_HZ = 700.0


class DecodedAudio(NamedTuple):
    """A file's first audio stream, as 16 kHz mono."""

    samples: np.ndarray  # [N] float32 in [-1, 1], 16 kHz mono
    had_audio_stream: bool
    truncated: bool  # the stream broke off; samples holds what decoded before
    start_s: float  # stream time of samples[0], in seconds; 0.0 without audio


class AudioAccumulator:
    """Collects decoded audio frames of one stream as 16 kHz mono float32.

    Fed frame by frame, so a caller that demuxes video and audio in one pass (bytes read
    once) can hand over the audio frames as they come. Samples are placed by their
    timestamps: a gap in the stream becomes silence, so later sound stays at its time.

    max_seconds caps how much audio is kept (None: all); frames past the cap are dropped, so
    memory stays bounded on long videos whose rgb is capped too. A streaming caller
    (features.audio_stream) reads `window`s instead and `release_before`s what it is done with.
    """

    def __init__(self, max_seconds: float | None = None) -> None:
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds={max_seconds}: must be positive (None: no cap)")
        self._max_samples = math.inf if max_seconds is None else round(max_seconds * SAMPLE_RATE)
        # Channels keep their layout through resampling and are averaged afterwards, as
        # VGGish's input does: swresample's own float downmix adds channels at -3 dB each
        # without normalizing, so a loud 5.1 track would come out far beyond [-1, 1].
        self._resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        self._input_kind: tuple[str, str, int] | None = None  # format, layout, rate
        self._chunks: list[np.ndarray] = []
        self._length = 0  # samples so far, gaps included, released ones too
        self._released = 0  # samples dropped from the front by release_before
        self._first_pts: int | None = None  # of the first resampled frame, in 1/SAMPLE_RATE
        self.start_s = 0.0  # stream time of the first sample

    def add_frame(self, frame: av.AudioFrame) -> None:
        """Resample one decoded frame (any rate, layout or sample format) and keep it."""
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._input_kind not in (None, kind):
            # A resampler serves one input kind; broadcasts switch layouts mid-stream.
            self._flush()
            self._resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        self._input_kind = kind
        for resampled in self._resampler.resample(frame):
            self._keep(resampled)

    def samples(self) -> np.ndarray:  # [N] float32
        """All samples so far, after flushing the resampler; call once decoding is over."""
        if self._released:
            raise ValueError("samples(): the first samples were released; use window()")
        self.finish()
        return self.window(0, self._length_cap())

    @property
    def end(self) -> int:
        """Index (from the first sample) one past the last sample so far, released ones counted."""
        return self._length_cap()

    @property
    def buffered(self) -> int:
        """Samples held in memory: from the first one not released to the end."""
        return self._length_cap() - self._released

    def window(self, start: int, stop: int) -> np.ndarray:  # [n] float32
        """Samples [start, stop) as far as they exist (indices from the first sample).

        start must not lie before what release_before dropped.
        """
        if start < self._released:
            raise ValueError(f"window({start}, ...): samples before {self._released} released")
        stop = min(stop, self._length_cap())
        if stop <= start:
            return np.zeros(0, np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        held = self._chunks[0][start - self._released : stop - self._released]
        # Resampling filters overshoot a little on full-scale input.
        return np.clip(held, -1.0, 1.0)

    def release_before(self, index: int) -> None:
        """Forget samples before `index`: what a streaming caller will never ask for again."""
        drop = min(index, self._length) - self._released
        if drop <= 0:
            return
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        self._chunks = [self._chunks[0][drop:]]
        self._released += drop

    def finish(self) -> None:
        """Flush the resampler's last samples: the stream is over."""
        self._flush()

    def _flush(self) -> None:
        if self._input_kind is None:
            return  # nothing was ever resampled
        for resampled in self._resampler.resample(None):
            self._keep(resampled)

    def _length_cap(self) -> int:
        return int(min(self._length, self._max_samples))

    def _keep(self, frame: av.AudioFrame) -> None:
        if self._length >= self._max_samples:
            return
        values = frame.to_ndarray().mean(axis=0, dtype=np.float32)  # [channels, n] -> [n]
        if frame.pts is not None:
            if self._first_pts is None:
                self._first_pts = frame.pts
                self.start_s = float(frame.pts * frame.time_base)
            gap = frame.pts - self._first_pts - self._length
            if gap > 0:
                gap = int(min(gap, self._max_samples - self._length))
                self._chunks.append(np.zeros(gap, np.float32))
                self._length += gap
        self._chunks.append(values)
        self._length += len(values)


def decode_audio(source: str | BinaryIO, *, max_seconds: float | None = None) -> DecodedAudio:
    """The first audio stream of `source` (a path or a binary file object), as 16 kHz mono.

    A file without an audio stream gives no samples and had_audio_stream False. A stream
    that breaks partway, or ends over a second before its header says, keeps what decoded
    before the break, with truncated True.
    """
    name = os.fspath(source) if isinstance(source, str | os.PathLike) else "<file object>"
    try:
        container = av.open(source, mode="r")
    except av.error.FFmpegError as error:
        raise ValueError(f"{name}: not a media container ({error})") from error
    with container:
        if not container.streams.audio:
            return DecodedAudio(np.zeros(0, np.float32), False, False, 0.0)
        stream = container.streams.audio[0]
        accumulator = AudioAccumulator(max_seconds)
        truncated = False
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    accumulator.add_frame(frame)
        except av.error.FFmpegError:
            truncated = True
            with suppress(av.error.FFmpegError):
                for frame in stream.decode(None):
                    accumulator.add_frame(frame)
        samples = accumulator.samples()
        end_s = accumulator.start_s + len(samples) / SAMPLE_RATE
        header_end_s = _header_end_s(container, stream)
        capped = max_seconds is not None and len(samples) >= round(max_seconds * SAMPLE_RATE)
        if header_end_s is not None and not capped and end_s + _TRUNCATION_SLACK_S < header_end_s:
            truncated = True  # the data stops where the header promised more
        return DecodedAudio(samples, True, truncated, accumulator.start_s)


def _header_end_s(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """Where the header says the audio ends, in seconds; None when it does not say.

    The container's duration spans every stream, so it speaks for the audio only when there
    is no video: a soundtrack shorter than its video is not a cut file.
    """
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    if container.duration and not container.streams.video:
        return ((container.start_time or 0) + container.duration) / av.time_base
    return None


def log_mel_spectrogram(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[N] waveform -> [frames, 64] float32 log-mel, frame j covering samples from j * hop.

    Only whole 25 ms windows count, as in VGGish, so fewer than one window gives [0, 64].
    """
    waveform = np.asarray(samples, dtype=np.float64).reshape(-1)
    window = round(sample_rate * WINDOW_SECONDS)
    hop = round(sample_rate * HOP_SECONDS)
    fft_length = 1 << (window - 1).bit_length()
    frames = 0 if len(waveform) < window else 1 + (len(waveform) - window) // hop
    if frames == 0:
        return np.zeros((0, MEL_BANDS), np.float32)
    starts = np.arange(frames)[:, None] * hop
    windowed = waveform[starts + np.arange(window)] * _periodic_hann(window)  # [frames, window]
    magnitudes = np.abs(np.fft.rfft(windowed, n=fft_length))  # [frames, fft_length // 2 + 1]
    # einsum, not a BLAS matmul: for matrices this small BLAS threads cost 5x more than
    # the arithmetic, and far more on a busy machine.
    mel = np.einsum("fb,bm->fm", magnitudes, _mel_matrix(fft_length // 2 + 1, sample_rate))
    return np.log(mel + LOG_OFFSET).astype(np.float32)


def examples_at(
    log_mel: np.ndarray, times_s: np.ndarray, example_seconds: float = EXAMPLE_SECONDS
) -> np.ndarray:
    """One example per time: [frames, 64] log-mel, [T] seconds -> [T, 96, 64] float32.

    Example i starts at times_s[i] (rounded to the 10 ms hop) and spans example_seconds.
    Starting, not centring, on the sample time is VGGish's own framing: at one sample per
    second, example i covers second i as the published AudioSet/YouTube-8M audio rows do
    (back to back from t = 0), and the first row holds sound rather than half silence.

    times_s are on the audio's clock (0 = the first sample); callers shift rgb times by
    (first video frame time - audio start_s). Whatever an example covers outside the
    log-mel (before its start, after its end: audio shorter than the video, or none) is
    digital silence, SILENCE_LOG_MEL, so no row is ever dropped.
    """
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if not np.isfinite(times).all():
        raise ValueError("times_s holds NaN or infinite values")
    length = round(example_seconds / HOP_SECONDS)
    return examples_from_frames(log_mel, example_start_frames(times), length)


def example_start_frames(times_s: np.ndarray) -> np.ndarray:  # [T] int64
    """The log-mel frame each example starts on: times rounded to the 10 ms hop."""
    return np.rint(np.asarray(times_s, dtype=np.float64) / HOP_SECONDS).astype(np.int64)


def examples_from_frames(
    log_mel: np.ndarray, start_frames: np.ndarray, length: int = EXAMPLE_FRAMES
) -> np.ndarray:
    """[frames, 64] log-mel, [T] first frames -> [T, length, 64] float32; outside: silence."""
    values = np.asarray(log_mel, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != MEL_BANDS:
        raise ValueError(f"log_mel has shape {values.shape}, expected [frames, {MEL_BANDS}]")
    starts = np.asarray(start_frames, dtype=np.int64).reshape(-1)
    rows = starts[:, None] + np.arange(length)  # [T, length]
    inside = (rows >= 0) & (rows < len(values))
    examples = np.full((len(starts), length, MEL_BANDS), SILENCE_LOG_MEL, np.float32)
    examples[inside] = values[rows[inside]]
    return examples  # [T, length, 64] float32


def silence_examples(count: int) -> np.ndarray:  # [count, 96, 64] float32
    """Examples of digital silence: what a video without an audio track gets per rgb row."""
    return np.full((count, EXAMPLE_FRAMES, MEL_BANDS), SILENCE_LOG_MEL, np.float32)


def _periodic_hann(length: int) -> np.ndarray:
    """A full cosine period over `length` points: the last point is not the closing zero."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def _hz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    return _MEL_Q * np.log1p(np.asarray(hertz, dtype=np.float64) / _MEL_BREAK_HZ)


@functools.cache
def _mel_matrix(spectrum_bins: int, sample_rate: int) -> np.ndarray:
    """[bins, 64] float64 triangular weights mapping STFT magnitudes onto mel bands.

    Band k rises from edge k to edge k + 1 and falls to edge k + 2, linearly in mel, with 66
    edges spread evenly in mel over [MEL_MIN_HZ, MEL_MAX_HZ]. The DC bin is left out, as HTK.
    """
    nyquist = sample_rate / 2
    if nyquist < MEL_MAX_HZ:
        raise ValueError(f"sample_rate={sample_rate}: mel bands reach {MEL_MAX_HZ} Hz > Nyquist")
    bin_mel = _hz_to_mel(np.linspace(0.0, nyquist, spectrum_bins))[:, None]  # [bins, 1]
    edges = np.linspace(_hz_to_mel(MEL_MIN_HZ), _hz_to_mel(MEL_MAX_HZ), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # [64] each
    rising = (bin_mel - lower) / (centre - lower)
    falling = (upper - bin_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0
    weights.flags.writeable = False  # cached and shared between calls
    return weights
