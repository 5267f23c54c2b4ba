"""Write a small labelled library of synthetic H.264 clips, laid out like UCF101.

Picture classes differ in what appears and in what order: `red_then_blue` and
`blue_then_red` show the same two shapes and differ only in order, so an orderless pooling
cannot tell them apart. Sound classes (`tone`, `noise`) show the same kind of picture and
differ only in their audio track (a 440-880 Hz tone, white noise), so only a model that
hears can tell them apart. Motion classes (`drift_right`, `drift_left`) show a coarse random
texture sliding DRIFT_PX_PER_FRAME px a frame sideways with wrap-around; a `drift_left` clip
is the clip `drift_right` would give at the same clip number, played backwards, so every
single frame of either class comes from one distribution and only the direction of motion
(optical flow, frame order) tells them apart. They are not in the default set:
`--classes drift_right,drift_left` or `all` writes them. Every clip has a mono AAC track; the
picture and motion classes carry one neutral sound (a quiet low hum with faint noise), so
sound is no shortcut for them.
Each clip draws its positions, sizes, colours, noise, frame size, frame rate and length from a
generator seeded by (seed, clip number), and its sound from one seeded by (seed, clip number,
1), so a library is reproducible clip by clip.

    make_sample_library --output DIR --videos 24 [--seed 0] [--seconds 8] [--classes all]

writes DIR/<class>/<class>_<k>.mp4 and DIR/labels.csv (`id,labels`, id = path without
extension relative to DIR).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from features import cli
from features.synthetic_video import Shape, Sound, render_shapes_frame, write_video

PICTURE_CLASSES = ("red_then_blue", "blue_then_red", "stripes", "checker")
SOUND_CLASSES = ("tone", "noise")
MOTION_CLASSES = ("drift_right", "drift_left")
CLASSES = PICTURE_CLASSES + SOUND_CLASSES + MOTION_CLASSES
DEFAULT_CLASSES = PICTURE_CLASSES
LABELS_FILE = "labels.csv"
FRAME_SIZES = ((120, 160), (144, 176), (96, 128))  # (height, width): small keeps it fast
FRAME_RATES = (24, 25, 30)
_NOISE_FIELDS = 4  # precomputed noise images cycled over frames: cheap, still not static
AUDIO_RATES = (44_100, 48_000)
# Source pixels a drift texture moves per frame: at 176 px wide squashed to 64, still ~1.1 px.
DRIFT_PX_PER_FRAME = 3

Renderer = Callable[[np.random.Generator, int, int, int], Iterator[np.ndarray]]


def make_sample_library(
    output_dir: str,
    videos: int,
    *,
    seed: int = 0,
    seconds: float = 8.0,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> list[tuple[str, str]]:
    """Write `videos` clips round-robin over `classes` (names in CLASSES), about `seconds`
    long each.

    Returns the (id, label) rows written to labels.csv.
    """
    if videos < 1 or seconds <= 0:
        raise ValueError(f"videos={videos}, seconds={seconds}: both must be positive")
    unknown = [label for label in classes if label not in CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes={list(classes)}: expected distinct names from {CLASSES}")
    rows = []
    for number in range(videos):
        label = classes[number % len(classes)]
        video_id = f"{label}/{label}_{number // len(classes):03d}"
        rng = np.random.default_rng([seed, number])
        height, width = FRAME_SIZES[rng.integers(len(FRAME_SIZES))]
        fps = int(rng.choice(FRAME_RATES))
        frame_count = max(2, round(seconds * rng.uniform(0.75, 1.25) * fps))
        path = os.path.join(output_dir, video_id + ".mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        frames = _RENDERERS[label](rng, frame_count, height, width)
        write_video(path, frames, fps=fps, sound=_sound(label, seed, number))
        rows.append((video_id, label))
    with open(os.path.join(output_dir, LABELS_FILE), "w", newline="") as labels_file:
        writer = csv.writer(labels_file)
        writer.writerow(["id", "labels"])
        writer.writerows(rows)
    return rows


def _red_then_blue(
    rng: np.random.Generator, frame_count: int, height: int, width: int
) -> Iterator[np.ndarray]:
    return _two_shapes(rng, frame_count, height, width, red_first=True)


def _blue_then_red(
    rng: np.random.Generator, frame_count: int, height: int, width: int
) -> Iterator[np.ndarray]:
    return _two_shapes(rng, frame_count, height, width, red_first=False)


def _two_shapes(
    rng: np.random.Generator, frame_count: int, height: int, width: int, *, red_first: bool
) -> Iterator[np.ndarray]:
    """A red disc then a blue square (or the reverse), each gliding across the frame."""
    red = (int(rng.integers(190, 256)), int(rng.integers(0, 50)), int(rng.integers(0, 50)))
    blue = (int(rng.integers(0, 50)), int(rng.integers(0, 60)), int(rng.integers(190, 256)))
    kinds = [("disc", red), ("square", blue)]
    if not red_first:
        kinds.reverse()
    switch = round(frame_count * rng.uniform(0.4, 0.6))
    spans = [(0, switch), (switch, frame_count)]
    background = _background(rng)
    noise = _noise_fields(rng, height, width)
    moves = []
    for _ in kinds:
        size = rng.uniform(0.1, 0.25) * min(height, width)
        start, end = (rng.uniform([size, size], [height - size, width - size]) for _ in range(2))
        moves.append((size, start, end))
    for index in range(frame_count):
        part = 0 if index < switch else 1
        (kind, color), (size, start, end) = kinds[part], moves[part]
        first, stop = spans[part]
        progress = (index - first) / max(1, stop - first - 1)
        center = start + (end - start) * progress
        shape = Shape(kind, (float(center[0]), float(center[1])), float(size), color)
        yield render_shapes_frame(
            height, width, [shape], background=background, noise=noise[index % _NOISE_FIELDS]
        )


def _stripes(
    rng: np.random.Generator, frame_count: int, height: int, width: int
) -> Iterator[np.ndarray]:
    """Two-colour stripes drifting across the frame, horizontally or vertically."""
    period = rng.uniform(8, 24)
    speed = rng.uniform(0.5, 3.0) * rng.choice([-1, 1])
    vertical = bool(rng.integers(2))
    colors = np.array([_background(rng), _bright(rng)], np.uint8)
    noise = _noise_fields(rng, height, width)
    coords = np.arange(width if vertical else height, dtype=np.float32)
    for index in range(frame_count):
        band = (((coords + speed * index) % period) < period / 2).astype(np.intp)
        line = colors[band]
        frame = np.broadcast_to(line[None] if vertical else line[:, None], (height, width, 3))
        yield _add_noise(frame, noise[index % _NOISE_FIELDS])


def _checker(
    rng: np.random.Generator, frame_count: int, height: int, width: int
) -> Iterator[np.ndarray]:
    """A checkerboard whose squares swap colours every few frames."""
    cell = int(rng.integers(8, 21))
    flicker_frames = int(rng.integers(2, 9))
    colors = np.array([_background(rng), _bright(rng)], np.uint8)
    noise = _noise_fields(rng, height, width)
    rows, cols = np.indices((height, width))
    board = ((rows // cell + cols // cell) % 2).astype(np.intp)
    for index in range(frame_count):
        phase = (index // flicker_frames) % 2
        yield _add_noise(colors[board ^ phase], noise[index % _NOISE_FIELDS])


def _orbit(
    rng: np.random.Generator, frame_count: int, height: int, width: int
) -> Iterator[np.ndarray]:
    """A grey disc circling the middle of the frame: the one picture of the sound classes."""
    background = _background(rng)
    grey = int(rng.integers(150, 256))
    size = rng.uniform(0.1, 0.2) * min(height, width)
    radius = rng.uniform(0.15, 0.3) * min(height, width)
    turns_per_frame = rng.uniform(0.01, 0.05) * rng.choice([-1, 1])
    phase = rng.uniform(0, 2 * np.pi)
    noise = _noise_fields(rng, height, width)
    for index in range(frame_count):
        angle = phase + 2 * np.pi * turns_per_frame * index
        center = (height / 2 + radius * np.sin(angle), width / 2 + radius * np.cos(angle))
        shape = Shape("disc", (float(center[0]), float(center[1])), float(size), (grey,) * 3)
        yield render_shapes_frame(
            height, width, [shape], background=background, noise=noise[index % _NOISE_FIELDS]
        )


def drift_frames(
    rng: np.random.Generator, frame_count: int, height: int, width: int, *, reverse: bool = False
) -> Iterator[np.ndarray]:
    """Random blobs sliding right DRIFT_PX_PER_FRAME px a frame, wrapping around the edge.

    Yields frame_count [height, width, 3] uint8 RGB frames. The texture, colours, start offset
    and noise come from `rng`; `reverse` yields the very same frames last to first, so the
    blobs slide left and nothing but the order differs.
    """
    texture = _blob_texture(rng, height, width)  # [H, W] float32 in [0, 1]
    dark, bright = np.array(_background(rng), np.float32), np.array(_bright(rng), np.float32)
    picture = np.round(dark + (bright - dark) * texture[..., None]).astype(np.uint8)  # [H, W, 3]
    start = int(rng.integers(width))
    noise = _noise_fields(rng, height, width)
    order = range(frame_count - 1, -1, -1) if reverse else range(frame_count)
    for index in order:
        shifted = np.roll(picture, start + DRIFT_PX_PER_FRAME * index, axis=1)
        yield _add_noise(shifted, noise[index % _NOISE_FIELDS])


def _drift_left(
    rng: np.random.Generator, frame_count: int, height: int, width: int
) -> Iterator[np.ndarray]:
    return drift_frames(rng, frame_count, height, width, reverse=True)


def _blob_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blurred white noise, pushed towards two levels -> [height, width] float32 in [0, 1].

    Blurring in the Fourier domain keeps the texture periodic, so a rolled copy has no seam and
    every offset looks alike. Blobs some 13-22 px across stay a few pixels wide at 64 x 64,
    big enough for flow to follow them through downscaling and H.264.
    """
    blur_px = rng.uniform(3.0, 5.0)
    white = rng.normal(size=(height, width))
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.rfftfreq(width)[None, :]
    gain = np.exp(-2 * (np.pi * blur_px) ** 2 * (freq_y**2 + freq_x**2))  # Gaussian blur
    smooth = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(height, width))
    contrast = (smooth - smooth.mean()) / smooth.std()
    return (0.5 + 0.5 * np.tanh(2.0 * contrast)).astype(np.float32)


def _sound(label: str, seed: int, number: int) -> Sound:
    """The clip's audio track, from its own generator: the pictures stay as they were."""
    rng = np.random.default_rng([seed, number, 1])
    rate = int(rng.choice(AUDIO_RATES))
    noise_seed = int(rng.integers(2**31))
    if label == "tone":
        amplitude = rng.uniform(0.2, 0.4)
        return Sound(rng.uniform(440, 880), amplitude, 0.0, noise_seed, rate)
    if label == "noise":
        return Sound(440.0, 0.0, rng.uniform(0.2, 0.4), noise_seed, rate)
    hum = rng.uniform(0.03, 0.06)
    return Sound(rng.uniform(100, 200), hum, rng.uniform(0.005, 0.015), noise_seed, rate)


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 80, size=3))


def _bright(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(150, 256, size=3))


def _noise_fields(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    noise_std = rng.uniform(0, 8)
    shape = (_NOISE_FIELDS, height, width, 3)
    return np.round(rng.normal(0, noise_std, shape)).astype(np.int16)  # [K, H, W, 3]


def _add_noise(frame: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


_RENDERERS: dict[str, Renderer] = {
    "red_then_blue": _red_then_blue,
    "blue_then_red": _blue_then_red,
    "stripes": _stripes,
    "checker": _checker,
    "tone": _orbit,
    "noise": _orbit,
    "drift_right": drift_frames,
    "drift_left": _drift_left,
}


def build_parser() -> cli.Parser:
    parser = cli.Parser("make_sample_library", __doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="folder to write the library into")
    parser.add_argument("--videos", required=True, type=cli.int_at_least(1), help="clips")
    parser.add_argument("--seed", type=int, default=0, help="library seed")
    parser.add_argument("--seconds", type=cli.positive_float, default=8.0, help="mean clip length")
    parser.add_argument(
        "--classes",
        type=_class_names,
        default=DEFAULT_CLASSES,
        help=f"comma-separated names of {','.join(CLASSES)}, or all "
        f"(default: the picture classes {','.join(DEFAULT_CLASSES)})",
    )
    return parser


def _class_names(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return CLASSES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in CLASSES]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected distinct names of {','.join(CLASSES)}, or all"
        )
    return names


def _write(args: argparse.Namespace) -> int:
    if os.path.isfile(args.output):
        raise cli.UsageError("is a file", f"--output {args.output}", "name a folder")
    rows = make_sample_library(
        args.output, args.videos, seed=args.seed, seconds=args.seconds, classes=args.classes
    )
    per_class = Counter(label for _, label in rows)
    counts = ", ".join(f"{label} {per_class[label]}" for label in CLASSES if per_class[label])
    print(f"wrote {len(rows)} videos ({counts}) to {args.output}; labels in {LABELS_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `make_sample_library`; errors are one line and exit with status 2."""
    args, _ = build_parser().parse(argv)
    return cli.run_main("make_sample_library", lambda: _write(args), args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
