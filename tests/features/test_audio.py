import math
from fractions import Fraction

import av
import numpy as np
import pytest

from features.audio import (
    EXAMPLE_FRAMES,
    MEL_BANDS,
    SAMPLE_RATE,
    SILENCE_LOG_MEL,
    AudioAccumulator,
    decode_audio,
    examples_at,
    log_mel_spectrogram,
)
from features.frames import iter_frame_chunks
from tests.audio_media import noise, tone, write_media

SILENCE = np.float32(SILENCE_LOG_MEL)


def _reference_log_mel(samples: np.ndarray, rate: int) -> np.ndarray:
    """VGGish's log-mel from its definition, one frame and one band at a time."""
    window, hop, fft_length = 400, 160, 512  # 25 ms, 10 ms at 16 kHz; next power of two
    hann = [0.5 - 0.5 * math.cos(2 * math.pi * n / window) for n in range(window)]

    def mel(hz: float) -> float:
        return 1127.0 * math.log(1.0 + hz / 700.0)

    edges = np.linspace(mel(125.0), mel(7500.0), 64 + 2)
    bin_mels = [mel(k * (rate / 2) / (fft_length // 2)) for k in range(fft_length // 2 + 1)]
    rows = []
    for start in range(0, len(samples) - window + 1, hop):
        spectrum = np.abs(np.fft.rfft(samples[start : start + window] * hann, fft_length))
        bands = []
        for band in range(64):
            low, centre, high = edges[band : band + 3]
            total = 0.0
            for k in range(1, len(spectrum)):  # no DC
                weight = min(
                    (bin_mels[k] - low) / (centre - low), (high - bin_mels[k]) / (high - centre)
                )
                total += max(weight, 0.0) * spectrum[k]
            bands.append(math.log(total + 0.01))
        rows.append(bands)
    return np.array(rows)


def _band_holding(hz: float) -> int:
    """The mel band whose triangle peaks nearest `hz` (HTK mel, 66 edges over 125-7500 Hz)."""
    edges = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)
    return int(np.argmin(np.abs(edges[1:-1] - 1127 * np.log1p(hz / 700))))


def test_log_mel_of_a_1khz_tone_matches_the_definition_and_peaks_at_1khz():
    samples = tone(1000.0, 0.3, SAMPLE_RATE)
    log_mel = log_mel_spectrogram(samples)
    reference = _reference_log_mel(samples.astype(np.float64), SAMPLE_RATE)
    assert log_mel.dtype == np.float32
    assert log_mel.shape == (1 + (len(samples) - 400) // 160, MEL_BANDS) == reference.shape
    np.testing.assert_allclose(log_mel, reference, rtol=1e-5, atol=1e-5)
    assert (log_mel.argmax(axis=1) == _band_holding(1000.0)).all()


def test_silence_is_log_offset_everywhere_and_short_audio_has_no_frames():
    log_mel = log_mel_spectrogram(np.zeros(SAMPLE_RATE, np.float32))
    assert log_mel.shape == (98, MEL_BANDS)
    np.testing.assert_array_equal(log_mel, np.float32(math.log(0.01)))
    assert np.float32(math.log(0.01)) == SILENCE
    assert log_mel_spectrogram(np.zeros(399, np.float32)).shape == (0, MEL_BANDS)


def test_examples_start_at_each_time_and_pad_with_silence():
    log_mel = np.arange(300 * MEL_BANDS, dtype=np.float32).reshape(300, MEL_BANDS)
    examples = examples_at(log_mel, np.array([0.0, 1.0, 2.5, -0.5, 10.0]))
    assert examples.shape == (5, EXAMPLE_FRAMES, MEL_BANDS)
    np.testing.assert_array_equal(examples[0], log_mel[0:96])
    np.testing.assert_array_equal(examples[1], log_mel[100:196])
    np.testing.assert_array_equal(examples[2, :50], log_mel[250:300])  # audio ends at 3 s
    np.testing.assert_array_equal(examples[2, 50:], SILENCE)
    np.testing.assert_array_equal(examples[3, :50], SILENCE)  # before the audio
    np.testing.assert_array_equal(examples[3, 50:], log_mel[0:46])
    np.testing.assert_array_equal(examples[4], SILENCE)
    empty = examples_at(np.zeros((0, MEL_BANDS), np.float32), np.arange(3.0))
    np.testing.assert_array_equal(empty, np.full((3, 96, 64), SILENCE))


@pytest.mark.parametrize(
    ("rate", "layout", "extension"),
    [
        (8_000, "mono", "m4a"),
        (44_100, "stereo", "m4a"),
        (48_000, "5.1", "m4a"),
        (8_000, "stereo", "wav"),
        (44_100, "5.1", "wav"),
        (48_000, "mono", "wav"),
    ],
)
def test_any_rate_and_layout_decodes_to_16khz_mono(tmp_path, rate, layout, extension):
    path = str(tmp_path / f"tone.{extension}")
    write_media(path, audio=tone(1000.0, 2.0, rate), rate=rate, layout=layout)
    decoded = decode_audio(path)
    assert decoded.had_audio_stream and not decoded.truncated
    assert decoded.samples.dtype == np.float32
    assert abs(len(decoded.samples) - 2 * SAMPLE_RATE) < 0.15 * SAMPLE_RATE  # AAC pads frames
    assert np.abs(decoded.samples).max() <= 1.0
    middle = decoded.samples[SAMPLE_RATE // 2 : 3 * SAMPLE_RATE // 2]
    # Channels are averaged, as VGGish does, so the tone keeps its 0.5 amplitude; but AAC
    # low-passes a 5.1 track's LFE channel, which then adds silence as one channel in six.
    share = 5 / 6 if layout == "5.1" and extension == "m4a" else 1.0
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(share * 0.5 / math.sqrt(2), rel=0.05)
    log_mel = log_mel_spectrogram(middle)
    assert (log_mel.argmax(axis=1) == _band_holding(1000.0)).all()


def test_a_file_without_audio_has_no_audio_stream(tmp_path):
    path = str(tmp_path / "silent_film.mp4")
    write_media(path, video_seconds=2.0)
    decoded = decode_audio(path)
    assert decoded.samples.shape == (0,)
    assert not decoded.had_audio_stream and not decoded.truncated


@pytest.mark.parametrize("damage", ["corrupt", "cut"])
def test_a_broken_audio_stream_keeps_what_decoded(tmp_path, damage):
    path = tmp_path / "tone.mkv"
    write_media(str(path), audio=tone(440.0, 4.0, 48_000), layout="stereo")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if damage == "corrupt":
        data[middle : middle + 4000] = np.random.default_rng(0).bytes(4000)
    else:
        del data[middle:]
    path.write_bytes(data)
    decoded = decode_audio(str(path))
    assert decoded.had_audio_stream and decoded.truncated
    assert SAMPLE_RATE < len(decoded.samples) < 3 * SAMPLE_RATE


def _video_start_s(path: str) -> float:
    with av.open(path) as container:
        frame = next(container.decode(video=0))
        return float(frame.pts * frame.time_base)


def _rgb_and_audio_rows(path: str) -> tuple[int, np.ndarray]:
    """rgb samples at 1 fps, and audio examples at the same times on the audio's clock."""
    chunks = list(iter_frame_chunks(path, fps=1.0, frame_size=(32, 32)))
    times_s = np.concatenate([chunk.timestamps_s for chunk in chunks])
    decoded = decode_audio(path)
    shift = _video_start_s(path) - decoded.start_s
    return len(times_s), examples_at(log_mel_spectrogram(decoded.samples), times_s + shift)


def _is_silent(example: np.ndarray) -> bool:
    return bool((example == SILENCE).all())


@pytest.mark.parametrize(
    ("audio_seconds", "silent_rows"),
    [(4.0, []), (1.2, [2, 3]), (7.0, [])],
    ids=["same_length", "audio_shorter", "audio_longer"],
)
def test_constant_rate_video_gets_one_audio_row_per_rgb_row(tmp_path, audio_seconds, silent_rows):
    path = str(tmp_path / "video.mp4")
    write_media(path, audio=tone(440.0, audio_seconds, 48_000), video_seconds=4.0)
    assert not decode_audio(path).truncated
    rgb_rows, examples = _rgb_and_audio_rows(path)
    assert rgb_rows == 4
    assert examples.shape == (rgb_rows, EXAMPLE_FRAMES, MEL_BANDS)
    assert [i for i in range(rgb_rows) if _is_silent(examples[i])] == silent_rows


@pytest.mark.parametrize(("rate", "layout"), [(8_000, "mono"), (44_100, "stereo"), (48_000, "5.1")])
def test_variable_rate_video_and_any_audio_format_keep_row_counts_equal(tmp_path, rate, layout):
    path = str(tmp_path / "vfr.mkv")
    timestamps = [0.0, 0.1, 0.15, 0.9, 1.7, 2.0, 2.95, 3.3]
    write_media(
        path, audio=tone(440.0, 2.0, rate), rate=rate, layout=layout, timestamps_s=timestamps
    )
    assert not decode_audio(path).truncated  # shorter than the video, not cut
    rgb_rows, examples = _rgb_and_audio_rows(path)
    assert rgb_rows == 4  # ceil(3.3 s span * 1 fps)
    assert examples.shape == (rgb_rows, EXAMPLE_FRAMES, MEL_BANDS)
    assert not _is_silent(examples[0]) and not _is_silent(examples[1])
    assert _is_silent(examples[3])  # audio ended at 2 s


def test_late_audio_lines_up_with_the_video_clock(tmp_path):
    path = str(tmp_path / "late.mp4")
    write_media(path, audio=tone(440.0, 2.0, 48_000), audio_start_s=1.5, video_seconds=4.0)
    decoded = decode_audio(path)
    assert decoded.start_s == pytest.approx(1.5, abs=0.03)  # less AAC's priming samples
    _, examples = _rgb_and_audio_rows(path)
    assert _is_silent(examples[0])
    assert (examples[1, :40] == SILENCE).all()  # [1.0, 1.4) s: none yet
    assert not _is_silent(examples[2])


def test_accumulator_fed_from_the_video_demux_pass_matches_decode_audio(tmp_path):
    path = str(tmp_path / "both.mp4")
    write_media(path, audio=noise(3.0, 44_100), rate=44_100, layout="stereo", video_seconds=3.0)
    accumulator = AudioAccumulator()
    video_frames = 0
    with av.open(path) as container:
        for packet in container.demux(*container.streams.video, *container.streams.audio):
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    accumulator.add_frame(frame)
                else:
                    video_frames += 1
    assert video_frames == 90
    decoded = decode_audio(path)
    np.testing.assert_array_equal(accumulator.samples(), decoded.samples)
    assert accumulator.start_s == decoded.start_s


def _frame(values: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(values[None, :], format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, pts, Fraction(1, SAMPLE_RATE)
    return frame


def test_a_layout_or_rate_change_midstream_keeps_going():
    accumulator = AudioAccumulator()
    mono = av.AudioFrame.from_ndarray(np.full((1, 4800), 0.5, np.float32), "fltp", "mono")
    stereo = av.AudioFrame.from_ndarray(np.full((2, 4410), 0.5, np.float32), "fltp", "stereo")
    mono.sample_rate, mono.pts, mono.time_base = 48_000, 0, Fraction(1, 48_000)
    stereo.sample_rate, stereo.pts, stereo.time_base = 44_100, 4410, Fraction(1, 44_100)
    accumulator.add_frame(mono)
    accumulator.add_frame(stereo)
    samples = accumulator.samples()
    assert abs(len(samples) - 2 * SAMPLE_RATE // 10) <= 64  # 0.1 s + 0.1 s at 16 kHz
    assert np.median(samples) == pytest.approx(0.5, abs=0.01)


def test_a_gap_in_the_stream_becomes_silence_and_max_seconds_caps_memory():
    accumulator = AudioAccumulator()
    accumulator.add_frame(_frame(np.full(1600, 0.5, np.float32), 0))
    accumulator.add_frame(_frame(np.full(1600, 0.5, np.float32), 2 * SAMPLE_RATE))
    samples = accumulator.samples()
    assert len(samples) == 2 * SAMPLE_RATE + 1600
    np.testing.assert_array_equal(samples[1600 : 2 * SAMPLE_RATE], 0.0)
    assert (samples[2 * SAMPLE_RATE :] > 0.4).all()

    capped = AudioAccumulator(max_seconds=1.0)
    for k in range(30):
        capped.add_frame(_frame(np.full(1600, 0.5, np.float32), 1600 * k))
    assert len(capped.samples()) == SAMPLE_RATE


def test_released_samples_are_forgotten_and_windows_read_what_is_held():
    accumulator = AudioAccumulator()
    for k in range(10):
        accumulator.add_frame(_frame(np.full(1600, k / 10, np.float32), 1600 * k))
    accumulator.finish()
    assert accumulator.end == accumulator.buffered == 16_000
    accumulator.release_before(8_000)
    assert accumulator.end == 16_000 and accumulator.buffered == 8_000
    np.testing.assert_array_equal(accumulator.window(8_000, 9_600), np.full(1600, 0.5, np.float32))
    assert len(accumulator.window(15_000, 20_000)) == 1_000  # as far as the samples go
    with pytest.raises(ValueError, match="released"):
        accumulator.window(0, 100)
    with pytest.raises(ValueError, match="released"):
        accumulator.samples()
