"""Bare CNN throughput per precision and XLA setting, and what mixed precision does to the bytes.

    python benchmarks/cnn_precision.py [--backbones inception_v3] [--streams rgb]
        [--precisions float32,mixed] [--jit auto|on|off|both] [--frames_per_batch auto]
        [--seconds 10] [--check_samples 512] [--check_video clip.mp4] [--weights random]

Per (stream, backbone, precision, jit): build_stream_model(..., --weights) in a FrameEmbedder
at --frames_per_batch (auto: features.precision.auto_frames_per_batch for the rgb frame; the
stream's samples per batch as FeatureSpec.samples_per_batch makes them), the first batch
traced and compiled untimed ("compile"), then whole batches of distinct synthetic uint8
samples for --seconds. samples/s: for rgb, images/s. Host -> device copies and the per-batch
sync are inside the timing, as in a job. On a GPU: peak GPU memory over the batch size
(model weights included, so an upper bound per sample).

Then every row's features of --check_samples other samples (for rgb, --check_video's frames
when given) are whitened and quantized as a job would (PCA to half the dims, at most a
quarter of the samples, fitted on the reference features of half of them, applied to the
other half) and compared byte for byte with the reference: float32 (on a GPU with TF32 off:
TensorFlow otherwise runs float32 convolutions as TF32 on compute capability >= 8.0), with
mixed rows' speed-up over float32. Exit status 1 if a mixed row keeps fewer than 99 % of
bytes within +-1. Target on a GPU: inception_v3 rgb mixed >= 3000 images/s.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from features.embedder import FrameEmbedder
from features.formats import AUDIO_KEY, C3D_BACKBONE, C3D_KEY, RGB_KEY, VGGISH_BACKBONE
from features.frames import iter_frame_chunks
from features.pca import fit_pca
from features.precision import PRECISIONS, auto_frames_per_batch, gpus
from features.quantize import quantize
from features.stream_models import build_stream_model, stream_input_shape
from features.streams import FeatureSpec
from features.vggish import AudioEmbedder, build_vggish

GPU_MIXED_TARGET = 3000.0  # inception_v3 rgb images/s with mixed precision, on a GPU
SPECIAL = {C3D_KEY: C3D_BACKBONE, AUDIO_KEY: VGGISH_BACKBONE}  # streams with their own network
JIT_CHOICES = {"auto": (None,), "on": (True,), "off": (False,), "both": (False, True)}


@dataclass
class Row:
    name: str
    precision: str
    jit: bool
    batch: int
    compile_s: float
    samples_per_s: float
    peak_mib_per_sample: float | None
    features: np.ndarray  # [check samples, D] float32


def synthetic_samples(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Distinct samples with detail at every scale (4, 16 and 64 cells across), so that a
    network's features vary between them as between real frames. # [n, *shape] uint8"""
    rng = np.random.default_rng(seed)
    *lead, height, width, channels = shape
    count = n * int(np.prod(lead, dtype=np.int64))
    field = np.zeros((count, height, width, channels), np.float32)
    for cells in (4, 16, 64):
        grid = rng.uniform(-1, 1, (count, cells, cells, channels)).astype(np.float32)
        field += tf.image.resize(grid, (height, width)).numpy() * np.sqrt(64 / cells)
    field = 127.5 + 60 * field / field.std()
    return np.clip(field, 0, 255).astype(np.uint8).reshape(n, *shape)


def log_mel_examples(n: int, seed: int = 0) -> np.ndarray:
    """Log-mel-like examples: smooth in time and frequency, around log(0.01). # [n, 96, 64]"""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1.5, (n, 12, 8, 1)).astype(np.float32)
    smooth = tf.image.resize(coarse, (96, 64)).numpy()[..., 0]
    return (np.log(0.01) + smooth + rng.normal(0, 0.3, smooth.shape)).astype(np.float32)


def video_frames(path: str, count: int, size: tuple[int, int]) -> np.ndarray:
    """`count` frames of the video at `path`, 2 a second, at `size`. # [count, H, W, 3] uint8"""
    chunks = iter_frame_chunks(path, fps=2.0, max_frames=count, frame_size=size)
    frames = np.concatenate([chunk.frames for chunk in chunks])
    if len(frames) < count:
        raise SystemExit(f"--check_video {path}: {len(frames)} frames at 2 fps, {count} needed")
    return frames


def samples_per_batch(stream: str, backbone: str, frames_per_batch: int) -> int:
    """The job's CNN batch for `stream` at --frames_per_batch (a flow sample holds 2L
    channels, a clip 16 frames)."""
    spec = FeatureSpec(stream, backbone, "random", 0, (0, 0), 1.0, "fit", 1)
    return spec.samples_per_batch(frames_per_batch)


def measure(
    name: str, embedder: FrameEmbedder, samples: np.ndarray, seconds: float, check: np.ndarray
) -> Row:
    """Time whole batches of `samples` for `seconds` after one untimed compiling batch."""
    batch = embedder.batch_size
    if gpus():
        tf.config.experimental.reset_memory_stats("GPU:0")
    start = time.perf_counter()
    embedder.embed(samples[:batch])
    compile_s = time.perf_counter() - start
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        offset = (done * batch) % (len(samples) - batch + 1)
        embedder.embed(samples[offset : offset + batch])
        done += 1
    wall = time.perf_counter() - start
    peak = None
    if gpus():
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / (1 << 20) / batch
    return Row(
        name,
        embedder.precision,
        embedder.jit_compile,
        batch,
        compile_s,
        done * batch / wall,
        peak,
        embedder.embed(check),
    )


def bytes_within_one(reference: np.ndarray, features: np.ndarray) -> tuple[float, int]:
    """Share of quantized bytes of `features` within +-1 of `reference`'s, and the largest
    difference: PCA to half the dims (at most a quarter of the samples, so that it is well
    estimated) fitted on the first half of `reference`, applied to the second half of both."""
    half = len(reference) // 2
    pca = fit_pca(reference[:half], dims=max(1, min(reference.shape[1] // 2, half // 2)))
    expected = quantize(pca.apply(reference[half:])).astype(np.int16)
    got = quantize(pca.apply(features[half:])).astype(np.int16)
    difference = np.abs(expected - got)
    return float((difference <= 1).mean()), int(difference.max())


def describe_machine() -> str:
    devices = []
    for gpu in gpus():
        details = tf.config.experimental.get_device_details(gpu)
        capability = ".".join(map(str, details.get("compute_capability", ("?",))))
        devices.append(f"{details.get('device_name', gpu.name)} (compute capability {capability})")
    return (
        f"{platform.processor() or platform.machine()}; GPU: {', '.join(devices) or 'none'}; "
        f"tensorflow {tf.__version__}, keras {keras.__version__}"
    )


def measure_model(
    stream: str, backbone: str, args: argparse.Namespace
) -> tuple[list[Row], np.ndarray, str]:
    """Every --precisions x --jit row of one stream's network, printed as measured, and the
    reference features of the check samples with their name."""
    # --frames_per_batch auto is sized for the rgb frame, as in a job; c3d's 112x112 frames
    # and audio's examples are smaller than any rgb backbone's frame: tiny's 64x64 stands in.
    rgb_frame = stream_input_shape(RGB_KEY, "tiny" if stream in SPECIAL else backbone)
    if stream == AUDIO_KEY:
        model = build_vggish(args.weights, seed=0)
        shape = tuple(model.input_shape[1:])
        check = log_mel_examples(args.check_samples, seed=2)
    else:
        model = build_stream_model(stream, backbone, args.weights, 0)
        shape = stream_input_shape(stream, backbone)
        check = synthetic_samples(args.check_samples, shape, seed=2)
        if args.check_video and stream == RGB_KEY:
            check = video_frames(args.check_video, args.check_samples, shape[:2])
    rows = []
    for precision in args.precisions.split(","):
        frames = (
            auto_frames_per_batch(rgb_frame)
            if args.frames_per_batch == "auto"
            else int(args.frames_per_batch)
        )
        batch = samples_per_batch(stream, backbone, frames)
        count = max(4 * batch, 8)
        if stream == AUDIO_KEY:
            samples = log_mel_examples(count, seed=1)
        else:
            samples = synthetic_samples(count, shape, seed=1)
        embedder_type = AudioEmbedder if stream == AUDIO_KEY else FrameEmbedder
        for jit in JIT_CHOICES[args.jit]:
            embedder = embedder_type(model, batch, precision=precision, jit_compile=jit)
            row = measure(f"{stream}/{backbone}", embedder, samples, args.seconds, check)
            peak = row.peak_mib_per_sample
            print(
                f"{row.name:28s} {row.precision:8s} jit={row.jit!s:5s} batch {row.batch:4d}: "
                f"{row.samples_per_s:9.1f} samples/s (compile {row.compile_s:5.1f} s"
                + ("" if peak is None else f", peak GPU memory {peak:.1f} MiB/sample")
                + ")",
                flush=True,
            )
            rows.append(row)
    if gpus():
        return rows, strict_float32(model, rows[0].batch, check), "float32 with TF32 off"
    reference = next((r for r in rows if r.precision == "float32"), rows[0])
    return rows, reference.features, f"float32 jit={reference.jit}"


def strict_float32(model: keras.Model, batch: int, check: np.ndarray) -> np.ndarray:
    """Features of `check` in true float32: on compute capability >= 8.0 TensorFlow runs
    float32 convolutions as TF32 (a 10-bit mantissa, as float16's) unless told not to."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        return FrameEmbedder(model, batch, "float32", jit_compile=False).embed(check)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)


def compare(rows: list[Row], reference: np.ndarray, reference_name: str) -> bool:
    """Print each row's byte agreement with `reference` and each mixed row's speed-up over
    float32; True when every mixed row keeps >= 99 % of bytes within +-1."""
    agreeing = True
    for row in (row for row in rows if row.features is not reference):
        share, largest = bytes_within_one(reference, row.features)
        if row.precision == "mixed":
            agreeing &= share >= 0.99
        line = (
            f"{row.name:28s} {row.precision:8s} jit={row.jit!s:5s}: {100 * share:6.2f}% of "
            f"bytes within +-1 of {reference_name} (largest difference {largest})"
        )
        base = next((r for r in rows if r.precision == "float32" and r.jit == row.jit), None)
        if row.precision != "float32" and base is not None:
            line += f"; {row.samples_per_s / base.samples_per_s:.2f}x float32's samples/s"
        print(line)
        if gpus() and row.name == f"{RGB_KEY}/inception_v3" and row.precision == "mixed":
            verdict = "met" if row.samples_per_s >= GPU_MIXED_TARGET else "MISSED"
            print(f"  target >= {GPU_MIXED_TARGET:.0f} images/s: {verdict}")
    return agreeing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="inception_v3")
    parser.add_argument("--streams", default=RGB_KEY, help="rgb, fovea, flow, i3d, c3d, audio")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--jit", choices=sorted(JIT_CHOICES), default="auto")
    parser.add_argument("--frames_per_batch", default="auto", help="an integer or auto")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed per configuration")
    parser.add_argument("--check_samples", type=int, default=512, help="samples for the check")
    parser.add_argument(
        "--check_video", default="", help="a video whose frames (2 fps) the rgb check embeds"
    )
    parser.add_argument(
        "--weights", default="random", help="random, imagenet (from the Keras cache) or a file"
    )
    args = parser.parse_args(argv)
    for gpu in gpus():
        tf.config.experimental.set_memory_growth(gpu, True)
    print(describe_machine(), flush=True)
    agreeing = True
    for stream in args.streams.split(","):
        backbones = [SPECIAL[stream]] if stream in SPECIAL else args.backbones.split(",")
        for backbone in backbones:
            agreeing &= compare(*measure_model(stream, backbone, args))
    return 0 if agreeing else 1


if __name__ == "__main__":
    sys.exit(main())
