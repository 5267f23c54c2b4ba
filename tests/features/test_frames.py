"""iter_frame_chunks against real encoded videos: counts, timing, geometry, damage, errors."""

from __future__ import annotations

import math
import os

import av
import numpy as np
import pytest

from features.frames import (
    EMPTY_FILE,
    NO_DECODABLE_FRAMES,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    AudioChunk,
    DecodeReport,
    FrameChunk,
    VideoDecodeError,
    iter_frame_chunks,
    iter_media_chunks,
)
from features.synthetic_video import (
    read_frame_index,
    render_index_frame,
    write_video,
)
from tests.broken_videos import (
    write_audio_only,
    write_empty,
    write_not_media,
    write_text,
    zero_media_payload,
)
from tests.conftest import INDEXED_VIDEO_FPS, INDEXED_VIDEO_FRAMES, INDEXED_VIDEO_SIZE

SPAN_S = (INDEXED_VIDEO_FRAMES - 1) / INDEXED_VIDEO_FPS
VFR_TIMES_S = [0.0, 0.1, 0.15, 0.5, 0.52, 1.3, 1.31, 2.0, 2.5, 3.0]


@pytest.fixture(autouse=True, scope="module")
def _quiet_ffmpeg():
    """Broken files are the point here; keep FFmpeg's complaints about them off the output."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.FATAL)
    yield
    av.logging.set_level(previous)


def decode(source, **kwargs) -> tuple[list, DecodeReport]:
    report = DecodeReport()
    return list(iter_frame_chunks(source, report=report, **kwargs)), report


def joined(chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.concatenate([c.frames for c in chunks]),
        np.concatenate([c.timestamps_s for c in chunks]),
        np.concatenate([c.frame_times_s for c in chunks]),
    )


def nearest(times_s: list[float], targets_s: np.ndarray) -> list[int]:
    """Reference choice: nearest time, ties to the earlier frame (argmin keeps the first).

    Rounding to nanoseconds makes float ties exact ties, as they are in the decoder's rationals.
    """
    gaps = np.abs(np.asarray(times_s)[None, :] - targets_s[:, None])
    return np.round(gaps, 9).argmin(axis=1).tolist()


def write_indexed(path, count: int, size=(120, 160), **kwargs) -> str:
    """Write `count` frames, frame k showing k (read_frame_index reads it back)."""
    write_video(str(path), (render_index_frame(k, *size) for k in range(count)), **kwargs)
    return str(path)


@pytest.mark.parametrize(
    ("fps", "max_frames", "expected"),
    [
        (1.0, 300, 10),
        (2.0, 300, 20),
        (0.5, 300, 5),
        (30.0, 300, 299),  # every frame but the last: t = span is past the last target
        (60.0, 300, 300),  # capped
        (60.0, 0, 598),  # no cap
        (1.0, 4, 4),
    ],
)
def test_counts_times_and_choice(indexed_video, fps, max_frames, expected):
    chunks, report = decode(indexed_video, fps=fps, max_frames=max_frames)
    frames, targets, frame_times = joined(chunks)
    assert report.frames == len(frames) == expected
    assert expected == min(math.ceil(SPAN_S * fps), max_frames or math.inf)
    np.testing.assert_allclose(targets, np.arange(expected) / fps)
    source_times = [k / INDEXED_VIDEO_FPS for k in range(INDEXED_VIDEO_FRAMES)]
    chosen = nearest(source_times, targets)
    assert [read_frame_index(f) for f in frames] == chosen
    np.testing.assert_allclose(frame_times, np.asarray(source_times)[chosen])
    assert frames.shape[1:] == (*INDEXED_VIDEO_SIZE, 3) and frames.dtype == np.uint8
    assert (report.height, report.width) == INDEXED_VIDEO_SIZE
    assert not report.truncated and report.error == ""


def test_cap_stops_decoding_early(indexed_video):
    _, report = decode(indexed_video, fps=1.0, max_frames=3)
    assert report.frames == 3
    assert report.decoded_frames < INDEXED_VIDEO_FRAMES // 2


def test_whole_video_span(indexed_video):
    _, report = decode(indexed_video, fps=1.0)
    assert report.span_s == pytest.approx(SPAN_S)
    assert report.decoded_frames == INDEXED_VIDEO_FRAMES


@pytest.mark.parametrize("chunk_frames", [1, 7, 20, 64])
def test_chunks_are_bounded_and_contiguous(indexed_video, chunk_frames):
    chunks, report = decode(indexed_video, fps=2.0, chunk_frames=chunk_frames)
    sizes = [len(c.frames) for c in chunks]
    assert all(0 < n <= chunk_frames for n in sizes) and sum(sizes) == report.frames == 20
    assert all(n == chunk_frames for n in sizes[:-1])
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    assert [c.start_index for c in chunks] == starts
    for chunk in chunks:
        assert len(chunk.timestamps_s) == len(chunk.frame_times_s) == len(chunk.frames)
        np.testing.assert_allclose(
            chunk.timestamps_s, (chunk.start_index + np.arange(len(chunk.frames))) / 2
        )


@pytest.mark.parametrize("extension", [".mp4", ".mkv"])
@pytest.mark.parametrize("fps", [1.0, 4.0, 7.0])
def test_vfr_picks_nearest_frame(tmp_path, extension, fps):
    path = write_indexed(tmp_path / f"vfr{extension}", len(VFR_TIMES_S), timestamps_s=VFR_TIMES_S)
    chunks, report = decode(path, fps=fps)
    frames, targets, frame_times = joined(chunks)
    assert len(frames) == math.ceil(VFR_TIMES_S[-1] * fps)
    chosen = nearest(VFR_TIMES_S, targets)
    assert [read_frame_index(f) for f in frames] == chosen
    np.testing.assert_allclose(frame_times, np.asarray(VFR_TIMES_S)[chosen])
    assert report.span_s == pytest.approx(VFR_TIMES_S[-1])


@pytest.mark.parametrize("extension", [".mp4", ".mkv", ".ts"])  # .ts also adds its own offset
def test_span_runs_from_first_timestamp(tmp_path, extension):
    start_s = 2.0
    times = [start_s + t for t in VFR_TIMES_S]
    path = write_indexed(tmp_path / f"late{extension}", len(times), timestamps_s=times)
    chunks, report = decode(path, fps=2.0)
    frames, targets, frame_times = joined(chunks)
    assert report.span_s == pytest.approx(VFR_TIMES_S[-1])
    assert len(frames) == 6 and targets[0] == 0 and frame_times[0] == 0
    assert [read_frame_index(f) for f in frames] == nearest(VFR_TIMES_S, targets)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("frame_size", [None, (50, 70)])
def test_odd_frame_size(tmp_path, codec, frame_size):
    path = write_indexed(tmp_path / "odd.mp4", 10, size=(97, 161), codec=codec)
    chunks, report = decode(path, fps=30.0, frame_size=frame_size)
    frames, _, _ = joined(chunks)
    assert frames.shape == (9, *(frame_size or (97, 161)), 3)
    assert (report.height, report.width) == (97, 161)
    assert [read_frame_index(f) for f in frames] == list(range(9))


def marked_frame(height: int, width: int) -> np.ndarray:
    """Grey with a red block in the top-left corner: shows which way is up."""
    frame = np.full((height, width, 3), 100, np.uint8)
    frame[: height // 3, : width // 4] = (230, 20, 20)
    return frame


@pytest.mark.parametrize(("rotation_degrees", "pyav_rotation"), [(90, -90), (180, 180), (270, 90)])
@pytest.mark.parametrize("frame_size", [None, (60, 90)])
def test_rotation_metadata_gives_upright_frames(
    tmp_path, rotation_degrees, pyav_rotation, frame_size
):
    height, width = 120, 160
    path = str(tmp_path / "phone.mp4")
    write_video(path, [marked_frame(height, width)] * 5, rotation_degrees=rotation_degrees)
    with av.open(path) as container:  # stored turned: the metadata is what makes it upright
        stored = container.streams.video[0]
        turned = rotation_degrees % 180 == 90
        assert (stored.height, stored.width) == ((width, height) if turned else (height, width))
    chunks, report = decode(path, fps=10.0, frame_size=frame_size)
    frames, _, _ = joined(chunks)
    out_height, out_width = frame_size or (height, width)
    assert frames.shape[1:] == (out_height, out_width, 3)
    assert report.rotation % 360 == pyav_rotation % 360
    assert (report.height, report.width) == (height, width)
    corner, far_corner = frames[0, 2, 2], frames[0, -3, -3]
    assert corner[0] > 180 and corner[2] < 80, corner
    assert far_corner[0] < 140, far_corner


@pytest.mark.parametrize("with_audio", [False, True])
def test_audio_track_does_not_matter(tmp_path, with_audio):
    path = write_indexed(tmp_path / "clip.mp4", 60, fps=30, with_audio=with_audio)
    chunks, report = decode(path, fps=5.0)
    frames, _, _ = joined(chunks)
    assert [read_frame_index(f) for f in frames] == list(range(0, 59, 6))
    assert not report.truncated


@pytest.mark.parametrize("extension", [".h264", ".mkv"])
def test_no_duration_header(tmp_path, extension):
    """Raw H.264 has no timestamps and no duration at all; Matroska has no stream duration."""
    path = write_indexed(tmp_path / f"clip{extension}", 90, fps=30)
    with av.open(path) as container:
        assert not container.streams.video[0].duration
    chunks, report = decode(path, fps=2.0)
    frames, _, _ = joined(chunks)
    assert [read_frame_index(f) for f in frames] == [0, 15, 30, 45, 60, 75]
    assert report.span_s == pytest.approx(89 / 30, abs=2e-3)
    assert not report.truncated


def test_file_object_source(indexed_video):
    with open(indexed_video, "rb") as video_file:
        from_file, _ = decode(video_file, fps=1.0)
    from_path, _ = decode(indexed_video, fps=1.0)
    np.testing.assert_array_equal(joined(from_file)[0], joined(from_path)[0])


def test_single_frame_gives_one_sample(tmp_path):
    path = write_indexed(tmp_path / "still.mp4", 1)
    chunks, report = decode(path, fps=1.0)
    assert [len(c.frames) for c in chunks] == [1] and report.span_s == 0


def test_closing_early_is_clean(indexed_video):
    chunks = iter_frame_chunks(indexed_video, fps=10.0, chunk_frames=4)
    assert len(next(chunks).frames) == 4
    chunks.close()


@pytest.mark.parametrize(
    "bad_argument", [{"fps": 0}, {"max_frames": -1}, {"chunk_frames": 0}, {"frame_size": (0, 4)}]
)
def test_bad_arguments(indexed_video, bad_argument):
    with pytest.raises(ValueError):
        iter_frame_chunks(indexed_video, **bad_argument)


def write_undecodable(path: str) -> None:
    """A well-formed mp4 whose H.264 payload is all zeros."""
    write_indexed(path, 30)
    zero_media_payload(path)


@pytest.mark.parametrize("as_file_object", [False, True])
@pytest.mark.parametrize(
    ("make", "name", "reason"),
    [
        (write_empty, "empty.mp4", EMPTY_FILE),
        (write_not_media, "noise.mp4", NOT_A_VIDEO),
        (write_text, "notes.mp4", NOT_A_VIDEO),
        (write_audio_only, "tone.m4a", NO_VIDEO_STREAM),
        (write_undecodable, "zeros.mp4", NO_DECODABLE_FRAMES),
    ],
)
def test_error_reasons(tmp_path, make, name, reason, as_file_object):
    path = str(tmp_path / name)
    make(path)
    report = DecodeReport()
    with open(path, "rb") as video_file, pytest.raises(VideoDecodeError) as raised:
        list(iter_frame_chunks(video_file if as_file_object else path, report=report))
    assert raised.value.reason == reason
    assert report.error == str(raised.value) and report.frames == 0
    if not as_file_object:
        assert path in report.error


def cut_at(fraction: float):
    def damage(data: bytes) -> bytes:
        return data[: int(len(data) * fraction)]

    return damage


def overwrite_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    noise = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return data[:middle] + noise + data[middle + len(noise) :]


@pytest.mark.parametrize(
    ("extension", "faststart", "damage", "flagged"),
    [
        (".mp4", True, cut_at(0.6), True),  # index first: the cut shows against its duration
        (".mkv", False, cut_at(0.6), True),  # the segment header states the duration
        (".mp4", True, overwrite_middle, True),  # the H.264 decoder rejects the garbage
        (".ts", False, cut_at(0.6), False),  # no length header: reads as a shorter video
    ],
)
def test_damaged_file_decodes_partially(tmp_path, extension, faststart, damage, flagged):
    source = write_indexed(tmp_path / f"full{extension}", 300, faststart=faststart)
    path = str(tmp_path / f"damaged{extension}")
    with open(source, "rb") as full, open(path, "wb") as damaged:
        damaged.write(damage(full.read()))
    chunks, report = decode(path, fps=1.0)
    frames, targets, _ = joined(chunks)
    assert 2 <= len(frames) < 10
    assert report.truncated == flagged and bool(report.error) == flagged
    assert [read_frame_index(f) for f in frames] == nearest(list(np.arange(300) / 30), targets)
    if flagged:
        assert path in report.error


def test_cut_mp4_with_index_at_the_end_is_not_a_video(tmp_path):
    """Without faststart the moov index comes last, so a cut loses it and nothing is readable."""
    source = write_indexed(tmp_path / "full.mp4", 300, faststart=False)
    path = str(tmp_path / "cut.mp4")
    with open(source, "rb") as full, open(path, "wb") as cut:
        cut.write(cut_at(0.6)(full.read()))
    with pytest.raises(VideoDecodeError) as raised:
        decode(path)
    assert raised.value.reason == NOT_A_VIDEO
    assert os.path.getsize(path) > 0


@pytest.mark.parametrize(
    ("extension", "faststart", "damage", "with_audio"),
    [
        (".mp4", True, None, True),
        (".mp4", True, cut_at(0.6), True),
        (".mkv", False, cut_at(0.6), False),
        (".mp4", True, overwrite_middle, True),
        (".ts", False, cut_at(0.6), True),
        (".h264", False, None, False),
    ],
)
def test_decoding_audio_too_leaves_the_frames_and_report_as_they_were(
    tmp_path, extension, faststart, damage, with_audio
):
    path = write_indexed(
        tmp_path / f"clip{extension}", 300, faststart=faststart, with_audio=with_audio
    )
    if damage is not None:
        with open(path, "rb") as full:
            data = damage(full.read())
        with open(path, "wb") as damaged:
            damaged.write(data)
    frames_only, report = decode(path, fps=1.0, chunk_frames=4)
    media_report = DecodeReport()
    media = list(iter_media_chunks(path, fps=1.0, chunk_frames=4, report=media_report))
    frame_chunks = [chunk for chunk in media if isinstance(chunk, FrameChunk)]
    audio_chunks = [chunk for chunk in media if isinstance(chunk, AudioChunk)]
    assert len(frame_chunks) == len(frames_only)
    for mine, theirs in zip(frame_chunks, frames_only, strict=True):
        assert mine.start_index == theirs.start_index
        np.testing.assert_array_equal(mine.frames, theirs.frames)
        np.testing.assert_array_equal(mine.timestamps_s, theirs.timestamps_s)
    assert [c.start_index for c in audio_chunks] == [c.start_index for c in frame_chunks]
    assert sum(len(c.examples) for c in audio_chunks) == report.frames == media_report.frames
    for field in ("truncated", "span_s", "decoded_frames", "width", "height"):
        assert getattr(media_report, field) == getattr(report, field), field
    assert bool(media_report.error) == bool(report.error)  # FFmpeg's words may differ
    assert media_report.has_audio == with_audio and not report.has_audio
