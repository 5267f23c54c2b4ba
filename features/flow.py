"""Stacked dense optical flow of a short clip: the input of two-stream networks' temporal stream.

A stack holds the flow of FLOW_PAIRS consecutive frame pairs (k, k + 1): channel 2k is the x
displacement (right +), 2k + 1 the y displacement (down +), in pixels at the clip's size,
clipped to +-FLOW_CLIP_PX and stored as uint8: round(d / FLOW_CLIP_PX * 127.5 + 127.5), so
128 means no motion and one step is FLOW_CLIP_PX / 127.5 = 0.157 px.

The estimator is OpenCV's DIS (Kroeger et al. 2016) with its MEDIUM preset, on grey frames.
Measured at 224 x 224, one thread, on a shared 2-core machine (a smooth random texture warped
by a known zoom + shift of 1-15 px, with and without noise; endpoint error over the interior):
  DIS ULTRAFAST  0.6 ms/pair  0.17-0.19 px      DIS FAST    1.3-1.8 ms/pair  0.10-0.14 px
  DIS MEDIUM     7-9 ms/pair  0.04-0.06 px      Farneback   16 ms/pair  0.05-0.07 px (lost at 15 px)
  TV-L1 (opencv-contrib, default settings, what I3D and two-stream papers used): ~960 ms/pair,
  about 100x DIS MEDIUM, and no more accurate here (0.16 px).
MEDIUM is the only DIS preset whose error stays under half a storage step (0.078 px), so what
a stack loses is the quantization, not the estimator; at FLOW_PAIRS = 10 pairs per sample it
costs about 80 ms of one core per sample at 224 x 224 (25 s for 300 samples) against ~15 ms
for FAST. A row shares its pairs with the next sample's only when samples are under 10 source
frames apart; features.clips computes each shared pair once.

Threads: OpenCV splits one DIS call over its thread pool. At 224 x 224 two threads took MEDIUM
from 8.2 to 5.0 ms of wall time but from 8.2 to 10 ms of CPU (448 x 448: 31 -> 21 ms wall,
31 -> 41 ms CPU). A pipeline keeps every core busy with a video of its own, so the pool only
adds that 20-30 % of overhead: a worker should call cv2.setNumThreads(1) once per process. The
setting is process-wide, so this module leaves it to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from features.formats import FLOW_CLIP_PX, FLOW_PAIRS

# DIS refuses frames with both sides under 12 px.
MIN_FLOW_SIDE = 12
_SCALE = 127.5 / FLOW_CLIP_PX  # storage steps per pixel


def make_estimator() -> cv2.DISOpticalFlow:
    """One DIS estimator; reuse it across pairs (it keeps its buffers between calls)."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def grey(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [H, W] uint8 luma."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def pair_flow(estimator: cv2.DISOpticalFlow, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Flow from grey frame `first` to `second` ([H, W] uint8 each) -> [H, W, 2] float32 px:
    pixel (y, x) of `first` is seen at (y + d[..., 1], x + d[..., 0]) in `second`."""
    if max(first.shape) < MIN_FLOW_SIDE:
        raise ValueError(f"flow of {first.shape[:2]} frames: a side must be >= {MIN_FLOW_SIDE}")
    return estimator.calc(first, second, None)


def stack_fields(
    fields: Sequence[np.ndarray], size_hw: tuple[int, int], pairs: int = FLOW_PAIRS
) -> np.ndarray:
    """Quantize up to `pairs` flow fields ([H, W, 2] float32 px each) into one stack.

    -> [H, W, 2 * pairs] uint8. Fewer fields than pairs repeat the last one (a clip cut short
    by the end of the video keeps moving as it last did); none gives "no motion" throughout.
    """
    height, width = size_hw
    if not fields:
        return np.full((height, width, 2 * pairs), 128, np.uint8)
    fields = list(fields[:pairs])
    fields += [fields[-1]] * (pairs - len(fields))
    displacement = np.concatenate(fields, axis=-1)  # [H, W, 2 * pairs]: x0, y0, x1, y1, ...
    levels = np.rint(np.clip(displacement, -FLOW_CLIP_PX, FLOW_CLIP_PX) * _SCALE + 127.5)
    return levels.astype(np.uint8)


def flow_stack(clip: np.ndarray, estimator: cv2.DISOpticalFlow | None = None) -> np.ndarray:
    """[n, H, W, 3] uint8 RGB frames -> [H, W, 2 * FLOW_PAIRS] uint8 stacked flow.

    Pair k is frames (k, k + 1); n = FLOW_PAIRS + 1 gives every pair, fewer repeat the last
    field, one frame gives "no motion". `estimator` (make_estimator) saves building one per call.
    """
    if clip.ndim != 4 or clip.shape[-1] != 3 or len(clip) == 0:
        raise ValueError(f"clip of shape {clip.shape}: expected [n >= 1, H, W, 3] RGB")
    estimator = estimator or make_estimator()
    greys = [grey(frame) for frame in clip[: FLOW_PAIRS + 1]]
    fields = [pair_flow(estimator, a, b) for a, b in zip(greys, greys[1:], strict=False)]
    return stack_fields(fields, clip.shape[1:3])


def decode_flow(stack: np.ndarray) -> np.ndarray:
    """Inverse of the storage: uint8 [..., 2L] -> float32 [..., 2L] displacements in px
    (each the centre of its step: 128 reads as +0.078 px, within half a step of zero)."""
    return ((stack.astype(np.float32) - 127.5) / _SCALE).astype(np.float32)
