"""Decoded frames -> upright RGB arrays of a given size, with display-matrix rotation applied."""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter


def quarter_turns(rotation: int) -> int:
    """PyAV's rotation (degrees counter-clockwise) as a count of quarter turns, 0..3."""
    return round(rotation / 90) % 4


class UprightConverter:
    """Turns frames into upright RGB of one size; a frame converted twice in a row converts once."""

    def __init__(self, size_hw: tuple[int, int]) -> None:
        self.size_hw = size_hw
        self.conversions = 0  # frames converted (the cost a caller may want to count)
        self._reformatter = VideoReformatter()  # reuses one swscale context across frames
        self._last: tuple[av.VideoFrame, np.ndarray] | None = None

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:  # [H, W, 3] uint8
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        turns = quarter_turns(frame.rotation)
        # Squashing commutes with quarter turns: scale the stored picture to the turned size.
        height, width = self.size_hw[::-1] if turns % 2 else self.size_hw
        stored = self._reformatter.reformat(frame, width=width, height=height, format="rgb24")
        rgb = np.rot90(stored.to_ndarray(), turns)
        self.conversions += 1
        self._last = (frame, rgb)
        return rgb
