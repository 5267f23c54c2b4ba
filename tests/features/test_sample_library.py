"""make_sample_library: UCF101 layout, labels.csv, decodable clips with sound, class content
(pictures, sounds and motion direction), CLI errors."""

from __future__ import annotations

import csv
import filecmp
import itertools
import os

import av
import cv2
import numpy as np
import pytest

from features.audio import SAMPLE_RATE, decode_audio
from features.frames import DecodeReport, iter_frame_chunks
from features.sample_library import (
    CLASSES,
    DEFAULT_CLASSES,
    DRIFT_PX_PER_FRAME,
    FRAME_RATES,
    LABELS_FILE,
    MOTION_CLASSES,
    SOUND_CLASSES,
    drift_frames,
    main,
    make_sample_library,
)

VIDEOS = 8
SECONDS = 2.0


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = str(tmp_path_factory.mktemp("library"))
    assert main(["--output", output, "--videos", str(VIDEOS), "--seconds", str(SECONDS)]) == 0
    return output


def read_labels(output: str) -> list[dict[str, str]]:
    with open(os.path.join(output, LABELS_FILE), newline="") as labels_file:
        return list(csv.DictReader(labels_file))


def every_frame(path: str) -> np.ndarray:  # [T, H, W, 3]: all frames but the last
    return np.concatenate([chunk.frames for chunk in iter_frame_chunks(path, fps=60.0)])


def test_layout_and_labels(library):
    rows = read_labels(library)
    classes = DEFAULT_CLASSES
    assert [row["labels"] for row in rows] == [classes[k % len(classes)] for k in range(VIDEOS)]
    for k, row in enumerate(rows):
        label = row["labels"]
        assert row["id"] == f"{label}/{label}_{k // len(classes):03d}"
        assert os.path.dirname(row["id"]) == label  # the parent folder is the label
    on_disk = sorted(
        os.path.relpath(os.path.join(folder, name), library)
        for folder, _, names in os.walk(library)
        for name in names
    )
    assert on_disk == sorted([LABELS_FILE] + [row["id"] + ".mp4" for row in rows])


def test_every_clip_decodes(library):
    for row in read_labels(library):
        report = DecodeReport()
        for _ in iter_frame_chunks(os.path.join(library, row["id"] + ".mp4"), report=report):
            pass
        assert not report.truncated and report.error == ""
        assert 0.7 * SECONDS < report.span_s < 1.3 * SECONDS
        assert report.decoded_frames / (report.span_s + 1e-9) < max(FRAME_RATES) + 1
        assert report.width <= 176 and report.height <= 144


def colour_share(frames: np.ndarray, colour: str) -> np.ndarray:  # [T] fraction of pixels
    red, green, blue = (frames[..., c].astype(int) for c in range(3))
    if colour == "red":
        mask = (red > 150) & (green < 90) & (blue < 90)
    else:
        mask = (blue > 150) & (red < 90) & (green < 100)
    return mask.mean(axis=(1, 2))


@pytest.mark.parametrize(
    ("label", "first", "then"), [("red_then_blue", "red", "blue"), ("blue_then_red", "blue", "red")]
)
def test_order_classes_show_shapes_in_order(library, label, first, then):
    clip = every_frame(os.path.join(library, label, f"{label}_000.mp4"))
    opening, ending = clip[:1], clip[-1:]
    assert colour_share(opening, first)[0] > 0.005 and colour_share(opening, then)[0] == 0
    assert colour_share(ending, then)[0] > 0.005 and colour_share(ending, first)[0] == 0


def test_same_seed_same_library_other_seed_differs(library, tmp_path):
    make_sample_library(str(tmp_path / "again"), VIDEOS, seconds=SECONDS)
    make_sample_library(str(tmp_path / "other"), VIDEOS, seed=1, seconds=SECONDS)
    for row in read_labels(library):
        name = row["id"] + ".mp4"
        original = os.path.join(library, name)
        assert filecmp.cmp(original, str(tmp_path / "again" / name), shallow=False)
        assert not filecmp.cmp(original, str(tmp_path / "other" / name), shallow=False)


@pytest.fixture(scope="module")
def sound_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = str(tmp_path_factory.mktemp("sounds"))
    make_sample_library(output, 4, seconds=SECONDS, classes=SOUND_CLASSES)
    return output


def video_packets(path: str) -> bytes:
    with av.open(path) as container:
        return b"".join(bytes(packet) for packet in container.demux(video=0) if packet.size)


def spectrum(path: str) -> tuple[np.ndarray, np.ndarray]:  # ([F] Hz, [F] magnitude)
    decoded = decode_audio(path)
    assert decoded.had_audio_stream and not decoded.truncated
    samples = decoded.samples[SAMPLE_RATE // 10 : -SAMPLE_RATE // 10]  # away from the edges
    magnitudes = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE), magnitudes


@pytest.fixture(scope="module")
def motion_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = str(tmp_path_factory.mktemp("motion"))
    make_sample_library(output, 4, seconds=1.0, classes=MOTION_CLASSES)
    return output


def test_every_clip_has_a_sound_track_as_long_as_its_picture(
    library, sound_library, motion_library
):
    for root in (library, sound_library, motion_library):
        for row in read_labels(root):
            path = os.path.join(root, row["id"] + ".mp4")
            decoded = decode_audio(path)
            report = DecodeReport()
            for _ in iter_frame_chunks(path, report=report):
                pass
            assert decoded.had_audio_stream, path
            assert abs(len(decoded.samples) / SAMPLE_RATE - report.span_s) < 0.2, path


def test_sound_classes_differ_only_by_sound(sound_library):
    """tone vs noise: a clip's picture depends on its number only, its sound on its class."""
    frequencies, tone = spectrum(os.path.join(sound_library, "tone/tone_000.mp4"))
    _, noise = spectrum(os.path.join(sound_library, "noise/noise_000.mp4"))
    peak = frequencies[np.argmax(tone)]
    assert 430 < peak < 890 and tone.max() > 50 * np.median(tone)  # one clear tone
    assert noise.max() < 20 * np.median(noise)  # white noise: no peak
    swapped = os.path.join(os.path.dirname(sound_library), "swapped")
    make_sample_library(swapped, 2, seconds=SECONDS, classes=SOUND_CLASSES[::-1])
    # Clip number 0 is a tone in one library and noise in the other: same picture.
    first = video_packets(os.path.join(sound_library, "tone/tone_000.mp4"))
    assert first == video_packets(os.path.join(swapped, "noise/noise_000.mp4"))
    assert first != video_packets(os.path.join(sound_library, "noise/noise_000.mp4"))


def test_picture_classes_share_one_quiet_sound(library):
    levels = []
    for row in read_labels(library):
        samples = decode_audio(os.path.join(library, row["id"] + ".mp4")).samples
        levels.append(float(np.sqrt(np.mean(samples**2))))
    assert max(levels) < 0.06 and min(levels) > 0.01  # a hum, never silence


def shift_between(first: np.ndarray, second: np.ndarray) -> tuple[int, int]:
    """(dy, dx) with second == np.roll(first, (dy, dx)), by phase correlation of grey frames."""
    spectra = [np.fft.fft2(frame.astype(np.float64).mean(axis=-1)) for frame in (first, second)]
    cross = spectra[1] * np.conj(spectra[0])
    peak = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(peak), peak.shape)
    height, width = peak.shape
    return int((dy + height // 2) % height - height // 2), int(
        (dx + width // 2) % width - width // 2
    )


def test_drift_classes_are_one_frame_sequence_played_both_ways():
    forward = np.stack(list(drift_frames(np.random.default_rng(7), 20, 96, 128)))
    backward = np.stack(list(drift_frames(np.random.default_rng(7), 20, 96, 128, reverse=True)))
    assert forward.shape == (20, 96, 128, 3) and forward.dtype == np.uint8
    np.testing.assert_array_equal(backward, forward[::-1])
    assert forward.std() > 30  # a textured picture, not a flat one
    for k in (0, 5, 18):
        assert shift_between(forward[k], forward[k + 1]) == (0, DRIFT_PX_PER_FRAME)
        assert shift_between(backward[k], backward[k + 1]) == (0, -DRIFT_PX_PER_FRAME)
    other = next(drift_frames(np.random.default_rng(8), 1, 96, 128))
    assert np.abs(other.astype(int) - forward[0]).mean() > 20  # the seed picks the texture


def decoded_frames(path: str) -> np.ndarray:  # [T, H, W, 3] uint8: every frame
    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_drift_clips_move_their_way_under_optical_flow_at_64_px(motion_library):
    estimator = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # features.flow's
    for row in read_labels(motion_library):
        clip = decoded_frames(os.path.join(motion_library, row["id"] + ".mp4"))
        small = [cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA) for frame in clip]
        greys = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in small]
        fields = np.stack([estimator.calc(a, b, None) for a, b in itertools.pairwise(greys)])
        # 3 px a frame at 128-176 px wide is 1.1-1.5 px at 64 px: every pair, not just most.
        along = fields[..., 0].mean(axis=(1, 2))  # [T - 1] px, right +
        sign = 1 if row["labels"] == "drift_right" else -1
        assert (sign * along > 0.8).all() and (sign * along < 1.8).all(), row["id"]
        assert np.abs(fields[..., 1]).mean() < 0.1, row["id"]


def test_drift_left_clip_is_the_drift_right_clip_reversed(motion_library, tmp_path):
    """Clip 0 of a library listing drift_left first has clip 0's picture, played backwards."""
    make_sample_library(str(tmp_path), 1, seconds=1.0, classes=MOTION_CLASSES[::-1])
    right = decoded_frames(os.path.join(motion_library, "drift_right/drift_right_000.mp4"))
    left = decoded_frames(str(tmp_path / "drift_left/drift_left_000.mp4"))
    assert left.shape == right.shape
    gap = np.abs(left[::-1].astype(int) - right).mean(axis=(1, 2, 3))  # [T]: coding noise only
    unreversed = np.abs(left.astype(int) - right).mean(axis=(1, 2, 3))
    assert gap.max() < 8 and np.median(unreversed) > 20, (gap.max(), np.median(unreversed))


def test_classes_flag(tmp_path, capsys):
    videos = str(len(CLASSES))
    argv = ["--output", str(tmp_path), "--videos", videos, "--seconds", "0.5", "--classes", "all"]
    assert main(argv) == 0
    assert sorted({row["labels"] for row in read_labels(str(tmp_path))}) == sorted(CLASSES)
    assert "tone 1, noise 1, drift_right 1, drift_left 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--output", "OUT", "--videos", "3", "--classes", "tone,drums"],
        ["--output", "OUT", "--videos", "3", "--classes", "tone,tone"],
        ["--videos", "3"],
        ["--output", "OUT", "--videos", "0"],
        ["--output", "OUT", "--videos", "two"],
        ["--output", "OUT", "--videos", "3", "--seconds", "-1"],
        ["--output", "FILE", "--videos", "3"],
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv):
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(tmp_path / arg) if arg in ("OUT", "FILE") else arg for arg in argv]
    try:
        status = main(argv)
    except SystemExit as raised:  # flag errors exit from the parser, the others return
        status = raised.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("make_sample_library: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "OUT").exists()


def test_summary_line(tmp_path, capsys):
    assert main(["--output", str(tmp_path), "--videos", "2", "--seconds", "0.5"]) == 0
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "wrote 2 videos" in summary
