"""Audio examples cut at the rgb sample times while the video is demuxed: one pass, bounded memory.

features.frames hands this the first audio stream's packets from the demuxer pass it runs
for the video, and each rgb sample time as it emits the sample. Example i is what
features.audio.examples_at gives for sample i's time on the audio's clock (video time +
first video frame time - audio start_s) over the whole track's log-mel, but it is cut as
soon as the audio it covers has arrived, and the samples before the next example's start
are released: only a few seconds of audio are ever held, however long the film.

Interleaving is trusted only so far (`INTERLEAVE_SECONDS`): once the video has moved that
far past an example's end with the audio not there, the audio is taken to have ended
(silence); audio that arrives that far ahead of the video is dropped. Real muxers interleave
within a second or two; anything looser is a broken file.
"""

from __future__ import annotations

import math
from contextlib import suppress

import av
import numpy as np

from features.audio import (
    EXAMPLE_FRAMES,
    HOP_SECONDS,
    SAMPLE_RATE,
    WINDOW_SECONDS,
    AudioAccumulator,
    example_start_frames,
    examples_from_frames,
    log_mel_spectrogram,
)

INTERLEAVE_SECONDS = 30.0
_HOP = round(SAMPLE_RATE * HOP_SECONDS)  # samples per log-mel frame step
_WINDOW = round(SAMPLE_RATE * WINDOW_SECONDS)
# Samples from an example's first log-mel frame to the end of its last one.
_EXAMPLE_SPAN = (EXAMPLE_FRAMES - 1) * _HOP + _WINDOW
# As features.frames and features.audio: a header may overstate the end a little.
_TRUNCATION_SLACK_S = 1.0


class AudioTrack:
    """The audio side of one demux pass: packets in, [n, 96, 64] examples out, in rgb order.

    `stream` is the container's first audio stream, or None (then every example is silence).
    has_audio, truncated and error describe the stream once `finish` has run.
    """

    def __init__(self, stream: av.AudioStream | None) -> None:
        self.stream = stream
        self.has_audio = stream is not None
        self.truncated = False
        self.error = ""
        self.peak_buffered = 0  # most samples held at once (memory check)
        self._accumulator = AudioAccumulator()
        self._decoding = stream is not None
        self._finished = False
        self._video_start_s: float | None = None  # first video frame's stream time
        self._video_now_s = -math.inf  # stream time of the latest video frame
        self._pending: list[float] = []  # rgb sample times (video clock) still to cut
        self._next_index = 0  # index of the first pending sample
        self._floor_frame = 0  # no later example starts before this log-mel frame
        self._ready: list[np.ndarray] = []  # cut examples [96, 64] not yet taken

    def route(self, packet: av.Packet) -> bool:
        """Take an audio packet (True), or note a video packet's time and leave it (False)."""
        if packet.stream.type == "audio":
            self.add_packet(packet)
            return True
        if packet.dts is not None and packet.time_base is not None:
            self.video_packet_at(float(packet.dts * packet.time_base))
        return False

    def demux_rest(self, container: av.container.InputContainer) -> None:
        """Read on while rgb samples wait for their audio: the video stopped at a frame cap."""
        if not self.waiting or self.stream is None:
            return
        try:
            for packet in container.demux(container.streams.video[0], self.stream):
                self.route(packet)
                if not self.waiting:
                    break
        except av.error.FFmpegError as error:
            self.stop(f"broken data ({error})")

    def add_packet(self, packet: av.Packet) -> None:
        """Decode one demuxed audio packet; a broken one ends the audio (kept, truncated)."""
        if not self._decoding:
            return
        try:
            for frame in packet.decode():
                self._add_frame(frame)
        except av.error.FFmpegError as error:
            self._stop_on(error)
        self._cut_ready()

    def set_video_start(self, seconds: float) -> None:
        """Stream time of the first video frame: video time 0."""
        self._video_start_s = seconds

    def add_sample(self, time_s: float) -> None:
        """The next rgb sample's time (seconds since the first video frame)."""
        self._pending.append(time_s)
        self._cut_ready()

    def video_packet_at(self, stream_time_s: float) -> None:
        """The demuxer has reached a video packet of this stream time (its dts, in seconds):
        packets, not decoded frames, since a threaded decoder holds frames back."""
        self._video_now_s = max(self._video_now_s, stream_time_s)
        self._cut_ready()

    @property
    def waiting(self) -> bool:
        """rgb samples whose audio has not all arrived yet."""
        return bool(self._pending)

    def stop(self, reason: str) -> None:
        """The container broke off: the audio ends here too (truncated, if any was there)."""
        if self._decoding:
            self.truncated = True
            self.error = reason
            with suppress(av.error.FFmpegError):
                for frame in self.stream.decode(None):
                    self._add_frame(frame)
            self._accumulator.finish()
        self._decoding = False
        self._cut_ready()

    def finish(self, read_to_end: bool, cut_file_end_s: float | None = None) -> None:
        """No more packets: drain the decoder and resampler, cut every pending example.

        read_to_end: the demuxer reached the end of the file (not a frame cap), so a stream
        that ends over a second before its header says was cut. cut_file_end_s: where the
        container says the file ends, when the video found it cut; a stream that does not
        state its own length was cut too if it stops that far short.
        """
        if self._decoding:
            with suppress(av.error.FFmpegError):
                for frame in self.stream.decode(None):
                    self._add_frame(frame)
            self._accumulator.finish()
        self._decoding = False
        self._finished = True
        if read_to_end and self.has_audio and not self.truncated:
            header_end_s = _header_end_s(self.stream) or cut_file_end_s
            if header_end_s is not None and self._end_s() + _TRUNCATION_SLACK_S < header_end_s:
                self.truncated = True
                self.error = (
                    f"audio ends at {self._end_s():.3f} s but the header promises "
                    f"{header_end_s:.3f} s"
                )
        self._cut_ready()

    def take(self, count: int | None = None) -> tuple[int, np.ndarray] | None:
        """(index of the first, [count, 96, 64] float32) once `count` examples are cut;
        None: all that are cut, when any."""
        available = len(self._ready)
        if available == 0 or (count is not None and available < count):
            return None
        count = available if count is None else count
        first = self._next_index - available
        examples = np.stack(self._ready[:count])
        del self._ready[:count]
        return first, examples

    @property
    def buffered(self) -> int:
        """Audio samples held now."""
        return self._accumulator.buffered

    def _add_frame(self, frame: av.AudioFrame) -> None:
        if self._started() and self._end_s() > self._video_now_s + INTERLEAVE_SECONDS:
            return  # far ahead of the video (-inf before its first packet): never waited for
        self._accumulator.add_frame(frame)
        self.peak_buffered = max(self.peak_buffered, self._accumulator.buffered)

    def _stop_on(self, error: Exception) -> None:
        self.truncated = True
        self.error = f"broken audio data ({error})"
        self._decoding = False
        with suppress(av.error.FFmpegError):
            for frame in self.stream.decode(None):
                self._add_frame(frame)
        self._accumulator.finish()

    def _end_s_offset(self) -> float:
        return self._accumulator.end / SAMPLE_RATE

    def _end_s(self) -> float:
        return self._accumulator.start_s + self._end_s_offset()

    def _started(self) -> bool:
        return self._accumulator.end > 0

    def _start_frames(self, times_s: list[float]) -> np.ndarray:  # [n] int64
        shift = self._video_start_s - self._accumulator.start_s
        return example_start_frames(np.asarray(times_s, np.float64) + shift)

    def _ready_count(self) -> int:
        """How many pending samples, from the first, have all the audio they will get."""
        if not self._pending or self._video_start_s is None:
            return 0
        if self._finished or not self._decoding:  # no more audio is coming
            return len(self._pending)
        # Past the interleave window the audio is not coming: cut with what there is.
        late = self._video_now_s - INTERLEAVE_SECONDS - EXAMPLE_FRAMES * HOP_SECONDS
        count = 0
        if self._started():
            needed = self._start_frames(self._pending) * _HOP + _EXAMPLE_SPAN  # [n]
            count = int(np.searchsorted(needed, self._accumulator.end, side="right"))
        while count < len(self._pending) and self._video_start_s + self._pending[count] < late:
            count += 1
        return count

    def _cut_ready(self) -> None:
        count = self._ready_count()
        if count == 0:
            self._release()
            return
        times, self._pending = self._pending[:count], self._pending[count:]
        self._next_index += count
        if self._started():
            starts = self._start_frames(times)
            first = max(int(starts[0]), self._floor_frame, 0)
            last = int(starts[-1]) + EXAMPLE_FRAMES - 1
            samples = self._accumulator.window(first * _HOP, last * _HOP + _WINDOW)
            examples = examples_from_frames(log_mel_spectrogram(samples), starts - first)
            self._floor_frame = max(self._floor_frame, int(starts[-1]))
        else:
            examples = examples_from_frames(np.zeros((0, 64), np.float32), np.zeros(count))
        self._ready.extend(examples)
        self._release()

    def _release(self) -> None:
        if not self._started() or self._video_start_s is None:
            return
        floor = self._floor_frame
        if self._pending:
            floor = max(floor, int(self._start_frames(self._pending[:1])[0]))
        self._accumulator.release_before(max(floor, 0) * _HOP)


def _header_end_s(stream: av.AudioStream) -> float | None:
    """Where the stream's header says the audio ends; the container's duration spans the
    video too, so it says nothing about a soundtrack shorter than its video."""
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    return None
