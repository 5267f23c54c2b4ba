"""The audio stream from the video's one demux pass: alignment, silence, bytes read, memory,
and DecodeAndEmbed computing rgb and audio side by side."""

import io
import os

import apache_beam as beam
import av
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from features.audio import SILENCE_LOG_MEL, decode_audio, examples_at, log_mel_spectrogram
from features.frames import (
    AudioChunk,
    DecodeReport,
    FrameChunk,
    iter_frame_chunks,
    iter_media_chunks,
)
from features.pca import fit_pca
from features.streams import FeatureSpec
from features.vggish import AudioEmbedder, build_vggish
from pipelines import decode_embed
from pipelines.config import FaultPlan
from pipelines.decode_embed import FAILED, SUMMARY, DecodeAndEmbed, DecodeFrames, chunks_tag
from pipelines.elements import VideoInput
from pipelines.model_handler import AudioModelHandler, BackboneModelHandler, handler_for
from tests.audio_media import noise, tone, write_media

RGB = FeatureSpec("rgb", "tiny", "random", 0, (64, 64), 1.0, "fit", 8)
AUDIO = FeatureSpec("audio", "vggish", "random", 0, (96, 64), 1.0, "fit", 16)
VFR_TIMES = [0.0, 0.1, 0.15, 0.9, 1.7, 2.0, 2.95, 3.3]


def _decode(path, **kwargs) -> tuple[list[FrameChunk], list[AudioChunk], DecodeReport]:
    report = DecodeReport()
    chunks = list(iter_media_chunks(path, frame_size=(32, 32), report=report, **kwargs))
    rgb = [chunk for chunk in chunks if isinstance(chunk, FrameChunk)]
    audio = [chunk for chunk in chunks if isinstance(chunk, AudioChunk)]
    return rgb, audio, report


def _whole_track_examples(path: str, times_s: np.ndarray) -> np.ndarray:
    """The reference: the whole track decoded on its own, cut at the rgb times."""
    decoded = decode_audio(path)
    with av.open(path) as container:
        frame = next(container.decode(video=0))
        shift = float(frame.pts * frame.time_base) - decoded.start_s
    return examples_at(log_mel_spectrogram(decoded.samples), times_s + shift)


@pytest.mark.parametrize(
    ("media", "rgb_rows", "silent_rows"),
    [
        (dict(audio_seconds=4.0, video_seconds=4.0), 4, []),
        (dict(audio_seconds=1.2, video_seconds=4.0), 4, [2, 3]),
        (dict(audio_seconds=7.0, video_seconds=4.0), 4, []),
        (dict(audio_seconds=2.5, timestamps_s=VFR_TIMES), 4, [3]),
        (dict(audio_seconds=2.0, audio_start_s=1.5, video_seconds=4.0), 4, [0]),
    ],
    ids=["constant_rate", "audio_shorter", "audio_longer", "vfr", "late_audio"],
)
@pytest.mark.parametrize(
    ("rate", "layout"), [(8_000, "mono"), (44_100, "stereo"), (48_000, "mono"), (48_000, "stereo")]
)
def test_one_audio_row_per_rgb_row_as_the_whole_track_gives(
    tmp_path, media, rgb_rows, silent_rows, rate, layout
):
    path = str(tmp_path / "video.mkv")
    media = dict(media)
    signal = noise(media.pop("audio_seconds"), rate)
    write_media(path, audio=signal, rate=rate, layout=layout, **media)
    rgb, audio, report = _decode(path, fps=1.0, chunk_frames=3)
    times = np.concatenate([chunk.timestamps_s for chunk in rgb])
    examples = np.concatenate([chunk.examples for chunk in audio])
    assert len(times) == rgb_rows == len(examples) == report.frames
    assert [chunk.start_index for chunk in audio] == [chunk.start_index for chunk in rgb]
    np.testing.assert_array_equal(examples, _whole_track_examples(path, times))
    silent = [i for i in range(rgb_rows) if (examples[i] == np.float32(SILENCE_LOG_MEL)).all()]
    assert silent == silent_rows
    assert report.has_audio and not report.audio_truncated
    # The rgb side is iter_frame_chunks', byte for byte.
    frames_only = list(iter_frame_chunks(path, fps=1.0, frame_size=(32, 32), chunk_frames=3))
    assert len(frames_only) == len(rgb)
    for mine, theirs in zip(rgb, frames_only, strict=True):
        np.testing.assert_array_equal(mine.frames, theirs.frames)
        np.testing.assert_array_equal(mine.frame_times_s, theirs.frame_times_s)


def test_many_samples_per_second_and_a_frame_cap_keep_rows_equal(tmp_path):
    path = str(tmp_path / "video.mp4")
    write_media(path, audio=noise(6.0, 44_100), rate=44_100, layout="stereo", video_seconds=6.0)
    rgb, audio, report = _decode(path, fps=5.0, max_frames=12, chunk_frames=5)
    times = np.concatenate([chunk.timestamps_s for chunk in rgb])
    examples = np.concatenate([chunk.examples for chunk in audio])
    assert len(times) == len(examples) == 12
    np.testing.assert_array_equal(examples, _whole_track_examples(path, times))
    assert report.has_audio and not report.audio_truncated  # capped, not cut


@pytest.fixture(scope="module")
def vggish() -> AudioEmbedder:
    return AudioEmbedder(build_vggish("random", seed=0), batch_size=4)


def test_no_audio_track_and_a_silent_track_embed_alike(tmp_path, vggish):
    no_track, silent_track, sound = (str(tmp_path / f"{name}.mp4") for name in "abc")
    write_media(no_track, video_seconds=3.0)
    write_media(silent_track, audio=np.zeros(3 * 48_000, np.float32), video_seconds=3.0)
    write_media(sound, audio=tone(440.0, 3.0, 48_000), video_seconds=3.0)
    embedded, reports = {}, {}
    for path in (no_track, silent_track, sound):
        _, audio, reports[path] = _decode(path, fps=1.0)
        examples = np.concatenate([chunk.examples for chunk in audio])
        assert len(examples) == 3
        embedded[path] = vggish.embed(examples)  # [3, 128]
    assert not reports[no_track].has_audio
    assert reports[silent_track].has_audio and reports[sound].has_audio
    apart = np.linalg.norm(embedded[no_track] - embedded[silent_track])
    assert apart < 0.01 * np.linalg.norm(embedded[no_track] - embedded[sound])
    assert np.abs(embedded[no_track]).max() > 0  # digital silence embeds to something


class _CountingFile(io.RawIOBase):
    """A file object that counts the bytes read through it."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 -- closed with this object
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._file.readinto(buffer)
        self.bytes_read += count
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.mark.parametrize("extension", ["mp4", "mkv"])
def test_audio_is_decoded_from_the_same_bytes_read_once(tmp_path, extension):
    path = str(tmp_path / f"video.{extension}")
    write_media(path, audio=noise(20.0, 48_000), layout="stereo", video_seconds=20.0, fps=10)
    size = os.path.getsize(path)
    read = {}
    for audio in (False, True):
        with _CountingFile(path) as source:
            chunks = list(iter_media_chunks(source, fps=1.0, frame_size=(32, 32), audio=audio))
            read[audio] = source.bytes_read
        assert sum(isinstance(chunk, AudioChunk) for chunk in chunks) == (1 if audio else 0)
    assert read[True] == read[False]  # the audio costs no extra read
    # One pass over the file; FFmpeg's format probe may read its first buffer (32 KiB) again.
    assert size <= read[True] <= size + 64 * 1024


def test_the_accumulator_holds_seconds_not_the_whole_track(tmp_path):
    path = str(tmp_path / "long.mkv")
    minutes = 5
    write_media(
        path,
        audio=noise(60.0 * minutes, 16_000),
        rate=16_000,
        video_seconds=60.0 * minutes,
        fps=2.0,
        audio_codec="pcm_s16le",
    )
    report = DecodeReport()
    rows = 0
    for chunk in iter_media_chunks(path, fps=1.0, max_frames=0, frame_size=(16, 16), report=report):
        rows += len(chunk.examples) if isinstance(chunk, AudioChunk) else 0
    assert rows == report.frames == 60 * minutes
    # The track is 4.8 M samples; a few seconds' worth are ever held at once.
    assert 16_000 < report.audio_peak_buffered < 5 * 16_000


def test_a_broken_audio_track_is_kept_and_flagged_beside_a_cut_video(tmp_path):
    path = tmp_path / "cut.mkv"
    write_media(str(path), audio=noise(6.0, 48_000), video_seconds=6.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rgb, audio, report = _decode(str(path), fps=1.0)
    assert report.truncated and report.audio_truncated and report.has_audio
    examples = np.concatenate([chunk.examples for chunk in audio])
    assert len(examples) == sum(len(chunk.frames) for chunk in rgb) >= 2
    assert not (examples[0] == np.float32(SILENCE_LOG_MEL)).all()  # what decoded is kept


def test_decode_frames_yields_audio_chunks_keyed_as_the_frame_chunks(tmp_path):
    with_sound, without = str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")
    write_media(with_sound, audio=tone(440.0, 5.0, 48_000), video_seconds=5.0)
    write_media(without, video_seconds=3.0)
    videos = [VideoInput("a", with_sound, (), False), VideoInput("b", without, (), False)]
    with TestPipeline() as pipeline:
        decoded = (
            pipeline
            | beam.Create(videos)
            | beam.ParDo(DecodeFrames(1.0, 0, (32, 32), 2, audio=True)).with_outputs(
                FAILED, SUMMARY, chunks_tag("audio"), main="chunks"
            )
        )
        frame_keys = decoded.chunks | "FrameKeys" >> beam.MapTuple(lambda k, f: (k, len(f)))
        audio_keys = decoded[chunks_tag("audio")] | "AudioKeys" >> beam.MapTuple(
            lambda k, examples: (k, examples.shape)
        )
        expected = [(b"a", 0), (b"a", 2), (b"a", 4), (b"b", 0), (b"b", 2)]
        counts = [2, 2, 1, 2, 1]
        assert_that(frame_keys, equal_to(list(zip(expected, counts, strict=True))), "frames")
        shapes = [(key, (n, 96, 64)) for key, n in zip(expected, counts, strict=True)]
        assert_that(audio_keys, equal_to(shapes), "audio")
        flags = decoded[SUMMARY] | beam.MapTuple(
            lambda key, summary: (key, summary.has_audio, summary.audio_truncated)
        )
        assert_that(flags, equal_to([(b"a", True, False), (b"b", False, False)]), "summary")


def test_handler_for_picks_vggish_for_audio_and_faults_still_apply():
    assert type(handler_for(RGB, 4)) is BackboneModelHandler
    faults = FaultPlan(fail_embed_ids=frozenset({"bad"}), nan_embed_ids=frozenset({"nan"}))
    handler = handler_for(AUDIO, 4, faults)
    assert isinstance(handler, AudioModelHandler)
    model = handler.load_model()
    examples = np.full((3, 96, 64), SILENCE_LOG_MEL, np.float32)
    batch = [((b"good", 0), examples), ((b"bad", 0), examples), ((b"nan", 0), examples)]
    results = dict(handler.run_inference(batch, model))
    assert results[(b"good", 0)].shape == (3, 128)
    assert "injected CNN failure" in results[(b"bad", 0)]
    assert np.isnan(results[(b"nan", 0)]).all()


def test_decode_and_embed_computes_rgb_and_audio_from_one_open_per_video(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    pca_paths = {"rgb": str(tmp_path / "pca.npz"), "audio": str(tmp_path / "audio_pca.npz")}
    fit_pca(rng.normal(size=(64, 256)).astype(np.float32), RGB.dims).save(pca_paths["rgb"])
    fit_pca(rng.normal(size=(64, 128)).astype(np.float32), AUDIO.dims).save(pca_paths["audio"])
    paths = {name: str(tmp_path / f"{name}.mp4") for name in ("tone", "mute", "long")}
    write_media(paths["tone"], audio=tone(440.0, 4.0, 44_100), rate=44_100, video_seconds=4.0)
    write_media(paths["mute"], video_seconds=3.0)
    write_media(paths["long"], audio=noise(8.0, 48_000), layout="stereo", video_seconds=2.0)
    videos = [VideoInput(name, path, (), False) for name, path in paths.items()]

    opened = []
    open_read = decode_embed.storage.open_read

    def counting_open(path, *args, **kwargs):
        opened.append(path)
        return open_read(path, *args, **kwargs)

    monkeypatch.setattr(decode_embed.storage, "open_read", counting_open)
    with TestPipeline() as pipeline:
        embedded, failures = (
            pipeline
            | beam.Create(videos)
            | DecodeAndEmbed([RGB, AUDIO], pca_paths, frames_per_batch=4, max_frames=0)
        )

        def shapes(video):
            features = video.features
            rgb, audio = features["rgb"], features["audio"]
            mute_rows = bool((audio == 0).all(axis=1).any())
            flags = (video.summary.has_audio, mute_rows, audio.dtype.name, sorted(video.means))
            return video.video.video_id, rgb.shape, audio.shape, *flags

        expected = [
            ("tone", (4, 8), (4, 16), True, False, "uint8", ["audio", "rgb"]),
            ("mute", (3, 8), (3, 16), False, False, "uint8", ["audio", "rgb"]),
            ("long", (2, 8), (2, 16), True, False, "uint8", ["audio", "rgb"]),
        ]
        assert_that(embedded | beam.Map(shapes), equal_to(expected), "videos")
        assert_that(failures, equal_to([]), "failures")
    assert sorted(opened) == sorted(paths.values())  # one open, one pass, per video
