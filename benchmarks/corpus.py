"""Fixed synthetic H.264 clips for the benchmarks, generated once and cached by their parameters.

Shapes move and a noise texture drifts under them on every frame, so the encoder (and later the
decoder) does real motion-compensated work instead of coding a static picture.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from features.synthetic_video import Sound, write_video

DEFAULT_CACHE_DIR = "/tmp/framevlad-bench"
_NOISE_LEVELS = 14  # 3-5 Mbit/s at 720p30 with x264 veryfast: a typical upload's bitrate
_NOISE_FIELDS = 4
_NOISE_MARGIN = 32  # pixels of slack around the frame for the drifting noise window
_SHAPES = 6


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the corpus; equal specs give byte-identical files (seeded, mbtree off)."""

    height: int
    width: int
    fps: int
    seconds: float
    seed: int
    audio: bool = False  # a 48 kHz AAC track (a tone over noise) as long as the video

    @property
    def file_name(self) -> str:
        sound = "_audio" if self.audio else ""
        return (
            f"shapes_{self.width}x{self.height}_{self.fps}fps_{self.seconds:g}s_seed{self.seed}"
            f"{sound}.mp4"
        )


def moving_shapes(spec: ClipSpec) -> Iterator[np.ndarray]:
    """Frames of `spec`: bouncing discs and squares over a drifting noise texture.

    Each yields [height, width, 3] uint8 RGB.
    """
    rng = np.random.default_rng(spec.seed)
    height, width = spec.height, spec.width
    noise = rng.integers(
        0,
        _NOISE_LEVELS,
        (_NOISE_FIELDS, height + _NOISE_MARGIN, width + _NOISE_MARGIN, 3),
        dtype=np.uint8,
    )
    background = np.linspace(20, 120, width, dtype=np.float32).astype(np.uint8)[None, :, None]
    sizes = rng.uniform(0.04, 0.12, _SHAPES) * min(height, width)  # radius or half-side
    colors = rng.integers(0, 256 - _NOISE_LEVELS, (_SHAPES, 3), dtype=np.uint8)
    positions = rng.uniform((0, 0), (height, width), (_SHAPES, 2))
    velocities = rng.uniform(-0.02, 0.02, (_SHAPES, 2)) * (height, width)  # pixels per frame
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    for index in range(round(spec.seconds * spec.fps)):
        canvas = np.empty((height, width, 3), np.uint8)
        canvas[:] = background
        for shape in range(_SHAPES):
            # Draw inside the shape's bounding box only: full-frame masks cost ~5x the time.
            y, x = positions[shape]
            size = sizes[shape]
            top, bottom = max(int(y - size), 0), min(int(y + size) + 1, height)
            left, right = max(int(x - size), 0), min(int(x + size) + 1, width)
            dy, dx = rows[top:bottom] - y, cols[:, left:right] - x
            if shape % 2:
                mask = (np.abs(dy) <= size) & (np.abs(dx) <= size)
            else:
                mask = dy * dy + dx * dx <= size * size
            canvas[top:bottom, left:right][mask] = colors[shape]
        oy, ox = rng.integers(0, _NOISE_MARGIN, 2)
        canvas += noise[index % _NOISE_FIELDS, oy : oy + height, ox : ox + width]
        yield canvas
        positions += velocities
        bounced = (positions < 0) | (positions > (height, width))
        velocities[bounced] *= -1


def write_clip(spec: ClipSpec, path: str) -> str:
    """Encode `spec` into `path` (written beside it, then renamed: no half files in the cache)."""
    partial = path + ".partial.mp4"
    sound = Sound(440.0, 0.2, 0.05, seed=spec.seed) if spec.audio else None
    write_video(partial, moving_shapes(spec), fps=spec.fps, sound=sound)
    os.replace(partial, path)
    return path


def ensure_clips(specs: list[ClipSpec], cache_dir: str, workers: int = 2) -> list[str]:
    """Paths of `specs` under `cache_dir`, encoding the missing ones in `workers` processes."""
    os.makedirs(cache_dir, exist_ok=True)
    paths = [os.path.join(cache_dir, spec.file_name) for spec in specs]
    missing = [
        (spec, path) for spec, path in zip(specs, paths, strict=True) if not os.path.exists(path)
    ]
    if missing:
        print(f"corpus: encoding {len(missing)} clip(s) into {cache_dir} (cached for next runs)")
        # spawn, not fork: the caller may already hold TensorFlow's threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=context) as pool:
            list(pool.map(write_clip, *zip(*missing, strict=True)))
    return paths
