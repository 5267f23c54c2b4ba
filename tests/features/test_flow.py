"""Stacked optical flow: direction, size, storage round trip, short clips; on arrays and videos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from features.clips import ViewChunk, flow_view
from features.flow import decode_flow, flow_stack, make_estimator, stack_fields
from features.formats import FLOW_CLIP_PX, FLOW_PAIRS
from features.frames import FrameChunk, iter_media_chunks
from features.synthetic_video import write_video

STEP_PX = FLOW_CLIP_PX / 127.5  # one storage level


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random grey texture as [height, width, 3] uint8 RGB: DIS has detail to track."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    grey = cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def windows(base: np.ndarray, corners: list[tuple[int, int]], size_hw: tuple[int, int]):
    """Crops of `base` with top-left corners `corners`: content moves right as `left` falls."""
    height, width = size_hw
    return np.stack([base[top : top + height, left : left + width] for top, left in corners])


def moving(base: np.ndarray, count: int, dx: int, dy: int, size_hw: tuple[int, int]) -> np.ndarray:
    """[count, H, W, 3]: `count` crops of `base` whose content moves dx px right and dy px down
    per frame."""
    top, left = abs(dy) * count, abs(dx) * count
    return windows(base, [(top - dy * k, left - dx * k) for k in range(count)], size_hw)


def interior(field: np.ndarray, margin: int) -> np.ndarray:
    return field[margin:-margin, margin:-margin]


def test_translation_right_and_down_by_pair():
    base = texture(160, 160)
    right = moving(base, FLOW_PAIRS + 1, dx=2, dy=0, size_hw=(64, 80))
    stack = flow_stack(right)
    assert stack.shape == (64, 80, 2 * FLOW_PAIRS) and stack.dtype == np.uint8
    px = interior(decode_flow(stack), 12)
    np.testing.assert_allclose(np.median(px[..., 0::2], axis=(0, 1)), 2.0, atol=0.2)
    np.testing.assert_allclose(np.median(px[..., 1::2], axis=(0, 1)), 0.0, atol=0.2)
    # Pair k fills channels 2k (x) and 2k + 1 (y): 2 px right, then 3 px down.
    turning = windows(base, [(40, 40), (40, 38), (37, 38)], (64, 80))
    px = interior(decode_flow(flow_stack(turning)), 12)
    medians = np.median(px, axis=(0, 1))  # [2L]
    np.testing.assert_allclose(medians[:4], [2.0, 0.0, 0.0, 3.0], atol=0.3)
    np.testing.assert_array_equal(px[..., 2:4], px[..., -2:])  # 2 pairs: the last repeats


def test_static_clip_has_no_motion():
    still = np.repeat(texture(48, 64)[None], FLOW_PAIRS + 1, axis=0)
    stack = flow_stack(still, make_estimator())
    assert np.abs(decode_flow(stack)).max() <= STEP_PX


def test_one_frame_is_no_motion():
    stack = flow_stack(texture(30, 40)[None])
    assert stack.shape == (30, 40, 2 * FLOW_PAIRS)
    assert (stack == 128).all()


def test_storage_round_trip_and_clip():
    rng = np.random.default_rng(3)
    fields = [rng.uniform(-30, 30, (5, 7, 2)).astype(np.float32) for _ in range(FLOW_PAIRS)]
    stack = stack_fields(fields, (5, 7))
    expected = np.clip(np.concatenate(fields, axis=-1), -FLOW_CLIP_PX, FLOW_CLIP_PX)
    np.testing.assert_allclose(decode_flow(stack), expected, atol=STEP_PX / 2 + 1e-4)
    assert stack.min() == 0 and stack.max() == 255  # +-30 px clipped to the ends
    assert decode_flow(stack).dtype == np.float32


def test_fewer_fields_repeat_the_last():
    first = np.full((4, 4, 2), 1.0, np.float32)
    last = np.full((4, 4, 2), -2.0, np.float32)
    px = decode_flow(stack_fields([first, last], (4, 4), pairs=4))  # [4, 4, 8]
    np.testing.assert_allclose(px[0, 0], [1, 1, -2, -2, -2, -2, -2, -2], atol=STEP_PX / 2)
    assert (stack_fields([], (4, 4)) == 128).all()


def test_too_small_for_dis():
    with pytest.raises(ValueError, match="12"):
        flow_stack(np.zeros((2, 8, 8, 3), np.uint8))


@pytest.mark.parametrize(("size_hw", "expected_px"), [((96, 128), 3.0), ((48, 64), 1.5)])
def test_video_moving_right_3px_per_frame(tmp_path, size_hw, expected_px):
    """Encoded at 96 x 128, the texture moves 3 px a frame; flow at half size sees 1.5 px."""
    path = str(tmp_path / "pan.mp4")
    write_video(path, list(moving(texture(120, 200), 14, dx=3, dy=0, size_hw=(96, 128))), fps=30)
    chunks = list(
        iter_media_chunks(path, fps=10.0, audio=False, views=[flow_view(size_hw, chunk=8)])
    )
    stacks = np.concatenate([c.inputs for c in chunks if isinstance(c, ViewChunk)])
    rgb_rows = sum(len(c.frames) for c in chunks if isinstance(c, FrameChunk))
    assert stacks.shape == (rgb_rows, *size_hw, 2 * FLOW_PAIRS) == (5, *size_hw, 20)
    px = interior(decode_flow(stacks[0]), size_hw[0] // 6)  # sample 0: pairs 0-1 ... 10-11
    np.testing.assert_allclose(np.median(px[..., 0::2], axis=(0, 1)), expected_px, atol=0.25)
    np.testing.assert_allclose(np.median(px[..., 1::2], axis=(0, 1)), 0.0, atol=0.25)


def test_video_standing_still(tmp_path):
    path = str(tmp_path / "still.mp4")
    write_video(path, [texture(72, 96)] * 12, fps=30)
    chunks = iter_media_chunks(path, fps=30.0, audio=False, views=[flow_view((72, 96), chunk=4)])
    stacks = np.concatenate([c.inputs for c in chunks if isinstance(c, ViewChunk)])
    assert len(stacks) == 11
    assert np.abs(decode_flow(stacks)).mean() < STEP_PX
