"""Views (flow, clips, fovea) cut from the rgb decode pass: rows, content, padding, memory."""

from __future__ import annotations

import av
import numpy as np
import pytest

from features.clips import ClipView, ViewChunk, ViewTrack, clip_view, flow_view, fovea_view
from features.formats import CLIP_FRAMES, FLOW_PAIRS
from features.frames import AudioChunk, DecodeReport, FrameChunk, iter_media_chunks
from features.synthetic_video import read_frame_index, render_index_frame, write_video
from tests.conftest import INDEXED_VIDEO_FRAMES

INDEX_SIZE = (30, 48)  # big enough for read_frame_index's three bands
VFR_TIMES_S = [0.0, 0.1, 0.15, 0.5, 0.52, 1.3, 1.31, 2.0, 2.5, 3.0]


def all_views(chunk: int = 5) -> list:
    return [
        flow_view((24, 32), chunk=chunk),
        clip_view("i3d", INDEX_SIZE, chunk=chunk + 1),
        clip_view("c3d", (12, 16), chunk=max(chunk - 2, 1)),
        fovea_view((12, 16), chunk=1),
    ]


def decode(path: str, views, **kwargs) -> tuple[list, dict[str, list], DecodeReport, list]:
    """(FrameChunks, {view name: ViewChunks}, report, every chunk in the order it came)."""
    report = DecodeReport()
    kwargs.setdefault("audio", False)
    order = list(iter_media_chunks(path, report=report, views=views, **kwargs))
    rgb = [c for c in order if isinstance(c, FrameChunk)]
    by_view = {
        v.name: [c for c in order if isinstance(c, ViewChunk) and c.name == v.name] for v in views
    }
    return rgb, by_view, report, order


def rows(chunks: list[ViewChunk]) -> np.ndarray:
    return np.concatenate([c.inputs for c in chunks])


def clip_indices(clip: np.ndarray) -> list[int]:
    return [read_frame_index(frame) for frame in clip]


def expected_clip(j: int, last: int, before: int = 8, after: int = 7) -> list[int]:
    """Source frames j - before ... j + after, held at the first and last frame."""
    return [min(max(k, 0), last) for k in range(j - before, j + after + 1)]


def write_indexed(path, count: int, size=(120, 160), **kwargs) -> str:
    write_video(str(path), (render_index_frame(k, *size) for k in range(count)), **kwargs)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "fps", "expected_rows"),
    [
        ("vfr", 10.0, 30),
        ("one_frame", 10.0, 1),
        ("fifth_second", 10.0, 2),
        ("fifth_second", 60, 10),
    ],
)
@pytest.mark.parametrize("audio", [False, True])
def test_every_view_has_a_row_per_rgb_sample(tmp_path, kind, fps, expected_rows, audio):
    if kind == "vfr":
        times = VFR_TIMES_S
        path = write_indexed(tmp_path / "vfr.mp4", 10, timestamps_s=times, with_audio=audio)
    else:
        count = 1 if kind == "one_frame" else 6  # 6 frames at 30 fps: 0.2 s
        times = [k / 30 for k in range(count)]
        path = write_indexed(tmp_path / f"{kind}.mp4", count, fps=30, with_audio=audio)
    views = all_views()
    rgb, by_view, report, _ = decode(path, views, fps=fps, chunk_frames=4, audio=audio)
    assert report.frames == expected_rows == sum(len(c.frames) for c in rgb)
    assert len(rgb) >= 1
    shapes = {
        "flow": (24, 32, 2 * FLOW_PAIRS),
        "i3d": (CLIP_FRAMES, *INDEX_SIZE, 3),
        "c3d": (CLIP_FRAMES, 12, 16, 3),
        "fovea": (12, 16, 3),
    }
    for view in views:
        chunks = by_view[view.name]
        sizes = [len(c.inputs) for c in chunks]
        assert sum(sizes) == report.frames, view.name
        assert all(size == view.chunk for size in sizes[:-1]) and 0 < sizes[-1] <= view.chunk
        assert [c.start_index for c in chunks] == np.cumsum([0, *sizes[:-1]]).tolist()
        assert rows(chunks).shape[1:] == shapes[view.name] and rows(chunks).dtype == np.uint8
    # The i3d clip is centred on the rgb sample's own frame, wherever VFR put it.
    chosen = [read_frame_index(f) for c in rgb for f in c.frames]
    i3d = rows(by_view["i3d"])
    assert [clip_indices(clip) for clip in i3d] == [
        expected_clip(j, len(times) - 1) for j in chosen
    ]
    if len(times) == 1:
        assert (rows(by_view["flow"]) == 128).all()  # one frame: no motion


def test_a_cut_file_still_gives_every_view_a_row_per_sample(tmp_path):
    full = write_indexed(tmp_path / "full.mp4", 300, with_audio=True)
    path = str(tmp_path / "cut.mp4")
    with open(full, "rb") as source, open(path, "wb") as cut:
        data = source.read()
        cut.write(data[: int(len(data) * 0.6)])
    views = all_views()
    rgb, by_view, report, _ = decode(path, views, fps=10.0, audio=True)
    assert report.truncated and 20 <= report.frames < 100
    assert all(len(rows(by_view[view.name])) == report.frames for view in views)
    # Source frames are the frames that decoded, in order (here a cut reference loses 165).
    with av.open(path) as container:
        decoded = [
            read_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)
        ]
    j = decoded.index(read_frame_index(rgb[-1].frames[-1]))
    expected = [decoded[k] for k in expected_clip(j, len(decoded) - 1)]
    assert clip_indices(rows(by_view["i3d"])[-1]) == expected


def test_clips_pad_with_first_and_last_frame(indexed_video):
    """At the source rate sample i is frame i; its clip is frames i - 8 ... i + 7, held at the
    ends (frame 299 exists but is never sampled: it is the last frame the clips repeat)."""
    _, by_view, report, _ = decode(indexed_video, [clip_view("i3d", INDEX_SIZE, 32)], fps=30.0)
    i3d = rows(by_view["i3d"])
    assert len(i3d) == report.frames == INDEXED_VIDEO_FRAMES - 1
    last = INDEXED_VIDEO_FRAMES - 1
    assert clip_indices(i3d[0]) == [0] * 9 + list(range(1, 8))
    assert clip_indices(i3d[-1]) == list(range(290, 300)) + [last] * 6
    assert [clip_indices(clip) for clip in i3d] == [expected_clip(i, last) for i in range(299)]


def test_sparse_samples_take_clips_around_their_frame(indexed_video):
    _, by_view, _, _ = decode(indexed_video, [clip_view("i3d", INDEX_SIZE, 4)], fps=1.0)
    i3d = rows(by_view["i3d"])
    assert [clip_indices(clip) for clip in i3d] == [expected_clip(30 * i, 299) for i in range(10)]


def test_flow_near_the_end_repeats_its_last_field(indexed_video):
    _, by_view, _, _ = decode(indexed_video, [flow_view((24, 32), 8)], fps=30.0)
    flow = rows(by_view["flow"])  # [299, 24, 32, 20]; sample i: pairs (i, i+1) ... to frame 299
    assert flow.shape == (299, 24, 32, 2 * FLOW_PAIRS)
    last = flow[-1]  # frame 298: one pair left, repeated
    assert all((last[..., 2 * k : 2 * k + 2] == last[..., :2]).all() for k in range(FLOW_PAIRS))
    nine = flow[290]  # frames 290 ... 299: nine pairs, the ninth twice
    np.testing.assert_array_equal(nine[..., 16:18], nine[..., 18:20])
    # Pair (k, k + 1) is the same field in every stack that holds it.
    np.testing.assert_array_equal(flow[290][..., 2:4], flow[291][..., 0:2])


@pytest.mark.parametrize("max_frames", [3, 1])
def test_cap_decodes_on_for_the_last_clips(indexed_video, max_frames):
    views = [clip_view("i3d", INDEX_SIZE, 2), flow_view((24, 32), 2)]
    rgb, by_view, report, _ = decode(indexed_video, views, fps=5.0, max_frames=max_frames)
    plain = list(iter_media_chunks(indexed_video, fps=5.0, max_frames=max_frames, audio=False))
    assert [c.start_index for c in rgb] == [c.start_index for c in plain]
    for mine, theirs in zip(rgb, plain, strict=True):
        np.testing.assert_array_equal(mine.frames, theirs.frames)
    last_frame = 6 * (max_frames - 1)  # samples at frames 0, 6, 12
    i3d = rows(by_view["i3d"])
    assert len(i3d) == len(rows(by_view["flow"])) == report.frames == max_frames
    assert clip_indices(i3d[-1]) == expected_clip(last_frame, 299)  # real frames, not padding
    assert report.decoded_frames == last_frame + FLOW_PAIRS + 1  # and not one frame more


def quartered_frame(height: int, width: int) -> np.ndarray:
    """Red border around the middle half; the middle half's quadrants green, blue, white, black."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (220, 30, 30)
    top, left, mid_y, mid_x = height // 4, width // 4, height // 2, width // 2
    frame[top:mid_y, left:mid_x] = (30, 200, 30)
    frame[top:mid_y, mid_x : width - left] = (30, 30, 220)
    frame[mid_y : height - top, left:mid_x] = (230, 230, 230)
    frame[mid_y : height - top, mid_x : width - left] = (20, 20, 20)
    return frame


def quadrant_colours(image: np.ndarray) -> np.ndarray:  # [4, 3]: TL, TR, BL, BR centres
    height, width = image.shape[:2]
    centres = [(height // 4, width // 4), (height // 4, 3 * width // 4)]
    centres += [(3 * height // 4, width // 4), (3 * height // 4, 3 * width // 4)]
    return np.stack([image[y, x].astype(int) for y, x in centres])


@pytest.mark.parametrize("rotation_degrees", [0, 90])
def test_fovea_is_the_middle_half_upright(tmp_path, rotation_degrees):
    path = str(tmp_path / "quartered.mp4")
    source = quartered_frame(128, 192)
    write_video(path, [source] * 20, fps=30, rotation_degrees=rotation_degrees)
    size = (32, 48)
    views = [fovea_view(size, chunk=4), clip_view("i3d", size, chunk=4)]
    rgb, by_view, _, _ = decode(path, views, fps=10.0, frame_size=size)
    fovea, i3d = rows(by_view["fovea"]), rows(by_view["i3d"])
    assert fovea.shape == (len(i3d), *size, 3) == (7, 32, 48, 3)
    middle = source[32:96, 48:144]  # rows H/4 ... 3H/4, columns W/4 ... 3W/4
    np.testing.assert_allclose(quadrant_colours(fovea[3]), quadrant_colours(middle), atol=12)
    inner = fovea[3][2:-2, 2:-2].astype(int)
    assert not ((inner[..., 0] > 150) & (inner[..., 1] < 90)).any()  # no red border inside
    # A clip frame is the rgb converter's frame when the sizes agree: upright, same pixels.
    frames = np.concatenate([c.frames for c in rgb])
    np.testing.assert_array_equal(i3d[3][CLIP_FRAMES // 2], frames[3])


def test_memory_is_bounded_on_a_long_video(tmp_path):
    """60 s at 30 fps, every frame a sample: the views hold a fixed window, not the video."""
    path = write_indexed(tmp_path / "long.mp4", 1800, size=(32, 48), fps=30)
    views = [flow_view((16, 16), 64), clip_view("i3d", (16, 16), 64), fovea_view((8, 8), 64)]
    _, by_view, report, _ = decode(path, views, fps=30.0, max_frames=0, frame_size=(16, 16))
    assert report.decoded_frames == 1800 and report.frames == 1799
    assert all(len(rows(by_view[v.name])) == 1799 for v in views)
    window = max(v.before for v in views[:2]) + max(v.after for v in views[:2]) + 2
    assert 0 < report.views_peak_buffered <= window
    # Each frame converts once per size, and flow, i3d and the fovea (8 x 8: the middle of
    # 16 x 16) all use 16 x 16.
    assert report.view_conversions == report.decoded_frames


def test_sparse_samples_convert_only_the_frames_they_need(indexed_video):
    _, _, report, _ = decode(indexed_video, [clip_view("i3d", (16, 16), 8)], fps=1.0)
    assert report.view_conversions == 16 * 10 - 8  # sample 0 repeats frame 0 nine times


def test_view_chunk_never_precedes_its_frame_chunk(indexed_video):
    views = [clip_view("i3d", (16, 16), 8), fovea_view((8, 8), 8)]
    _, _, _, order = decode(indexed_video, views, fps=10.0, chunk_frames=8, audio=True)
    seen_rgb: set[int] = set()
    for chunk in order:
        if isinstance(chunk, FrameChunk):
            seen_rgb.add(chunk.start_index)
        elif isinstance(chunk, ViewChunk | AudioChunk):
            assert chunk.start_index in seen_rgb


def test_track_on_raw_frames_exact():
    """ViewTrack alone, on unencoded frames: exact pixels, repeated choices, the window."""
    track = ViewTrack([ClipView("pair", (2, 3), before=1, after=1, chunk=2)])
    for k in range(4):
        track.add_frame(av.VideoFrame.from_ndarray(np.full((4, 6, 3), 10 * k, np.uint8), "rgb24"))
        track.add_sample(k)
        if k == 1:
            track.add_sample(1)  # a frame chosen twice (fps above the source rate)
    assert track.waiting
    track.finish()
    assert not track.waiting
    (first, second, third) = track.take(final=True)
    assert [c.start_index for c in (first, second, third)] == [0, 2, 4]
    levels = np.concatenate([first.inputs, second.inputs, third.inputs])[:, :, 0, 0, 0]
    np.testing.assert_array_equal(
        levels, [[0, 0, 10], [0, 10, 20], [0, 10, 20], [10, 20, 30], [20, 30, 30]]
    )
    assert track.peak_buffered <= 1 + 1 + 2


def test_track_refuses_a_sample_outside_the_window():
    track = ViewTrack([clip_view("i3d", (16, 16), 1)])
    for _ in range(5):
        track.add_frame(av.VideoFrame.from_ndarray(np.zeros((4, 4, 3), np.uint8), "rgb24"))
    with pytest.raises(ValueError, match="source frame 1"):
        track.add_sample(1)


@pytest.mark.parametrize(
    "views",
    [
        lambda: [clip_view("i3d", (16, 16), 1), clip_view("i3d", (8, 8), 1)],  # a name twice
        lambda: [ClipView("flow", (32, 32), before=2, after=10, chunk=1, flow=True)],
        lambda: [flow_view((8, 8), 1)],  # DIS needs a side of 12
        lambda: [fovea_view((8, 8), 0)],
    ],
)
def test_bad_views_are_refused_before_decoding(indexed_video, views):
    with pytest.raises(ValueError):
        iter_media_chunks(indexed_video, views=views())
