"""Per-sample inputs of the motion and clip streams, cut from the rgb decode pass itself.

A view turns rgb sample i, whose chosen decoded frame is source frame j (source frames: the
decoded frames in order, at the source rate, after features.frames drops repeated
timestamps), into one row of a stream's input:
  ClipView   source frames j - before ... j + after, each squashed upright to size_hw
             (i3d, c3d: 16 frames j - 8 ... j + 7); with flow=True the clip is reduced to its
             stacked optical flow instead (frames j ... j + FLOW_PAIRS, features.flow).
  FoveaView  frame j's middle half (rows H/4 ... 3H/4, columns W/4 ... 3W/4), at size_hw: twice
             the linear resolution of an rgb frame of the same size.
Every view has exactly one row per rgb sample. Near the start or end of the video a clip
repeats the first or last frame there is; a flow stack with fewer than FLOW_PAIRS pairs left
repeats its last field, and a one-frame video gives "no motion".

ViewTrack holds the decoded frames (av.VideoFrame, converted lazily) of a sliding window
only: from the earliest frame a waiting or future sample can need to the newest, at most
max(before) + max(after) + 2 frames however long the video (16 for flow + i3d), plus the
last frame each size's converter remembers. A frame converts only when a row needs it, once
per size (views of one size share it; the fovea uses twice its size). Lazy against eager,
measured on a 10 s 1280 x 720 30 fps video sampled at 1 fps, views i3d 224 + c3d 112 + fovea
224: lazy converts 314 times (+0.3 s over the rgb-only pass), converting every frame to 224
and 112 as it is decoded would be 600 (+0.6 s); at 5 fps and above nearly every frame is
needed and both do the same. The price is memory: the window holds decoded pictures, 1.4 MB
each at 720p (22 MB for 16), 12 MB at 4K (200 MB), where converted ones would be 150 KB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import numpy as np

from features.flow import MIN_FLOW_SIDE, grey, make_estimator, pair_flow, stack_fields
from features.formats import CLIP_FRAMES, FLOW_KEY, FLOW_PAIRS, FOVEA_KEY
from features.upright import UprightConverter


@dataclass(frozen=True)
class ClipView:
    """Per sample: source frames j - before ... j + after around sample i's frame j."""

    name: str  # stream name: "flow" | "i3d" | "c3d"
    size_hw: tuple[int, int]  # every clip frame squashed (upright) to this size
    before: int  # i3d/c3d: CLIP_FRAMES // 2 = 8; flow: 0
    after: int  # i3d/c3d: CLIP_FRAMES // 2 - 1 = 7; flow: FLOW_PAIRS = 10
    chunk: int  # samples per ViewChunk (>= 1)
    flow: bool = False  # reduce each clip to its stacked optical flow (after pairs)

    def __post_init__(self) -> None:
        _check_common(self.name, self.size_hw, self.chunk)
        if self.before < 0 or self.after < 0:
            raise ValueError(f"view {self.name}: before={self.before}, after={self.after}: >= 0")
        if self.flow and (self.before != 0 or self.after < 1):
            raise ValueError(f"flow view {self.name}: needs before=0 and after >= 1 (pairs)")
        if self.flow and max(self.size_hw) < MIN_FLOW_SIDE:
            raise ValueError(f"flow view {self.name}: size {self.size_hw} under {MIN_FLOW_SIDE} px")


@dataclass(frozen=True)
class FoveaView:
    """Per sample: the chosen frame's middle half (half the height and width), at size_hw."""

    name: str  # "fovea"
    size_hw: tuple[int, int]
    chunk: int  # samples per ViewChunk (>= 1)

    def __post_init__(self) -> None:
        _check_common(self.name, self.size_hw, self.chunk)


View = ClipView | FoveaView


@dataclass
class ViewChunk:
    """One view's rows of consecutive samples; chunk k + 1 starts where chunk k ends."""

    name: str
    start_index: int  # index i of the first sample
    # fovea [n, H, W, 3] uint8 RGB; i3d/c3d [n, F, H, W, 3] uint8 RGB (F = before + after + 1);
    # flow [n, H, W, 2L] uint8 (features.flow.decode_flow reads it back)
    inputs: np.ndarray


def flow_view(size_hw: tuple[int, int], chunk: int, name: str = FLOW_KEY) -> ClipView:
    """Stacked flow of the FLOW_PAIRS source-frame pairs from the sample's frame on."""
    return ClipView(name, size_hw, before=0, after=FLOW_PAIRS, chunk=chunk, flow=True)


def clip_view(name: str, size_hw: tuple[int, int], chunk: int) -> ClipView:
    """CLIP_FRAMES source frames j - 8 ... j + 7 (i3d, c3d)."""
    half = CLIP_FRAMES // 2
    return ClipView(name, size_hw, before=half, after=CLIP_FRAMES - half - 1, chunk=chunk)


def fovea_view(size_hw: tuple[int, int], chunk: int, name: str = FOVEA_KEY) -> FoveaView:
    return FoveaView(name, size_hw, chunk)


def _check_common(name: str, size_hw: tuple[int, int], chunk: int) -> None:
    if len(size_hw) != 2 or min(size_hw) < 1:
        raise ValueError(f"view {name}: size_hw={size_hw}: height and width must be >= 1")
    if chunk < 1:
        raise ValueError(f"view {name}: chunk={chunk}: must be >= 1")


def _reach(view: View) -> tuple[int, int]:
    """(before, after): how far a view's row reaches from the sample's frame."""
    return (view.before, view.after) if isinstance(view, ClipView) else (0, 0)


class _Entry:
    """A decoded frame in the window, and what has been computed from it (key -> array)."""

    __slots__ = ("arrays", "frame")

    def __init__(self, frame: av.VideoFrame) -> None:
        self.frame = frame
        self.arrays: dict[tuple, np.ndarray] = {}


class ViewTrack:
    """The views' side of one decode pass: source frames and sample choices in, ViewChunks out.

    Call add_frame for every source frame in order, add_sample for every rgb sample in order
    (with its chosen frame's source index), finish once the frames end; take() hands over the
    rows cut so far. A row is cut as soon as its last frame has arrived.
    """

    def __init__(self, views: Sequence[View]) -> None:
        names = [view.name for view in views]
        if len(set(names)) != len(names):
            raise ValueError(f"views {names}: names must differ")
        self.views = tuple(views)
        self.peak_buffered = 0  # most decoded frames held at once (memory check)
        self._entries: deque[_Entry] = deque()  # source frames _first ... _count - 1
        self._first = 0
        self._count = 0
        self._finished = False
        self._max_before = max((_reach(view)[0] for view in views), default=0)
        self._pending: list[deque[int]] = [deque() for _ in views]  # source index per sample
        self._rows: list[list[np.ndarray]] = [[] for _ in views]  # cut, not taken yet
        self._taken = [0] * len(views)  # sample index of each view's first untaken row
        self._converters: dict[tuple[int, int], UprightConverter] = {}
        self._estimators = {view.name: make_estimator() for view in views if _is_flow(view)}

    @property
    def waiting(self) -> bool:
        """Samples whose rows wait for frames still to come."""
        return any(self._pending)

    @property
    def conversions(self) -> int:
        """Frames converted to RGB so far, over all sizes."""
        return sum(converter.conversions for converter in self._converters.values())

    def add_frame(self, frame: av.VideoFrame) -> None:
        """The next source frame."""
        self._entries.append(_Entry(frame))
        self._count += 1
        self.peak_buffered = max(self.peak_buffered, len(self._entries))
        self._cut_ready()

    def add_sample(self, source_index: int) -> None:
        """The next rgb sample chose source frame `source_index`: the newest frame added or
        the one before it (the window keeps no older frames for samples to come)."""
        if not self._count - 2 <= source_index < self._count:
            raise ValueError(
                f"sample at source frame {source_index}: expected one of the two newest "
                f"({self._count - 2}, {self._count - 1})"
            )
        for pending in self._pending:
            pending.append(source_index)
        self._cut_ready()

    def finish(self) -> None:
        """No more frames: cut every waiting row, padded with the last frame, and let go."""
        self._finished = True
        self._cut_ready()
        self._entries.clear()
        self._first = self._count

    def take(self, final: bool = False) -> Iterator[ViewChunk]:
        """Full chunks of rows cut so far; final: also each view's last, shorter chunk."""
        for v, view in enumerate(self.views):
            rows = self._rows[v]
            while len(rows) >= view.chunk or (final and rows):
                count = min(view.chunk, len(rows))
                yield ViewChunk(view.name, self._taken[v], np.stack(rows[:count]))
                del rows[:count]
                self._taken[v] += count

    def _cut_ready(self) -> None:
        for v, view in enumerate(self.views):
            after = _reach(view)[1]
            pending = self._pending[v]
            while pending and (self._finished or pending[0] + after < self._count):
                self._rows[v].append(self._cut(view, pending.popleft()))
        self._release()

    def _release(self) -> None:
        """Drop the frames no waiting or future sample can reach."""
        # A sample still to come chooses one of the two newest frames.
        floor = self._count - 2 - self._max_before
        for view, pending in zip(self.views, self._pending, strict=True):
            if pending:
                floor = min(floor, pending[0] - _reach(view)[0])
        while self._entries and self._first < floor:
            self._entries.popleft()
            self._first += 1

    def _cut(self, view: View, source_index: int) -> np.ndarray:
        if isinstance(view, FoveaView):
            return self._fovea(source_index, view.size_hw)
        if view.flow:
            last = min(source_index + view.after, self._count - 1)
            fields = [self._field(view, k) for k in range(source_index, last)]
            return stack_fields(fields, view.size_hw, pairs=view.after)  # [H, W, 2L]
        span = range(source_index - view.before, source_index + view.after + 1)
        return np.stack([self._rgb(k, view.size_hw) for k in span])  # [F, H, W, 3]

    def _entry(self, source_index: int) -> _Entry:
        """Source frame `source_index`, or the first/last there is when it lies beyond."""
        clamped = min(max(source_index, 0), self._count - 1)
        if clamped < self._first:  # a deque's negative index would wrap round silently
            raise RuntimeError(f"source frame {clamped} was released (window from {self._first})")
        return self._entries[clamped - self._first]

    def _rgb(self, source_index: int, size_hw: tuple[int, int]) -> np.ndarray:  # [H, W, 3]
        entry = self._entry(source_index)
        key = ("rgb", size_hw)
        if key not in entry.arrays:
            entry.arrays[key] = self._converter(size_hw).rgb(entry.frame)
        return entry.arrays[key]

    def _fovea(self, source_index: int, size_hw: tuple[int, int]) -> np.ndarray:  # [H, W, 3]
        entry = self._entry(source_index)
        key = ("fovea", size_hw)
        if key not in entry.arrays:
            height, width = size_hw
            # The middle half of a frame scaled to twice the size is the crop at this size
            # (exact for even sizes; odd ones sit half a pixel up and left).
            full = self._rgb(source_index, (2 * height, 2 * width))
            top, left = height // 2, width // 2
            entry.arrays[key] = full[top : top + height, left : left + width].copy()
        return entry.arrays[key]

    def _field(self, view: ClipView, source_index: int) -> np.ndarray:  # [H, W, 2] float32
        """Flow from source frame k to k + 1 at the view's size, computed once per pair."""
        entry = self._entry(source_index)
        key = ("flow", view.name)
        if key not in entry.arrays:
            first, second = (self._grey(k, view.size_hw) for k in (source_index, source_index + 1))
            entry.arrays[key] = pair_flow(self._estimators[view.name], first, second)
        return entry.arrays[key]

    def _grey(self, source_index: int, size_hw: tuple[int, int]) -> np.ndarray:  # [H, W]
        entry = self._entry(source_index)
        key = ("grey", size_hw)
        if key not in entry.arrays:
            entry.arrays[key] = grey(np.ascontiguousarray(self._rgb(source_index, size_hw)))
        return entry.arrays[key]

    def _converter(self, size_hw: tuple[int, int]) -> UprightConverter:
        if size_hw not in self._converters:
            self._converters[size_hw] = UprightConverter(size_hw)
        return self._converters[size_hw]


def _is_flow(view: View) -> bool:
    return isinstance(view, ClipView) and view.flow
