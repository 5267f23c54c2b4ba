"""Picking a video's middle frame while its frames stream by, in bounded memory."""

import numpy as np


class MiddleFramePicker:
    """Keeps every `stride`-th frame, at most `capacity` of them, doubling the stride when
    full; at the end the kept frame nearest the middle is within one stride of it.

    The frame count is unknown until decoding ends (a duration header may be missing or
    wrong), so the middle frame cannot be chosen while streaming.
    """

    def __init__(self, capacity: int = 16) -> None:
        self._capacity = capacity
        self._stride = 1
        self._kept: dict[int, np.ndarray] = {}
        self._count = 0

    def add(self, frame: np.ndarray) -> None:
        if self._count % self._stride == 0:
            self._kept[self._count] = frame.copy()
            if len(self._kept) > self._capacity:
                self._stride *= 2
                self._kept = {i: f for i, f in self._kept.items() if i % self._stride == 0}
        self._count += 1

    def middle(self) -> np.ndarray | None:
        if not self._kept:
            return None
        target = (self._count - 1) / 2
        return self._kept[min(self._kept, key=lambda index: abs(index - target))]
