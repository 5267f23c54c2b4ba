"""Training throughput of the pooling models, as ratios measured in one run.

    python benchmarks/train_throughput.py [--cache_dir /tmp/framevlad-bench-train] [--steps 100]
        [--warmup_steps 10] [--rounds 3] [--clusters 64 256] [--netvlad_steps 3]
        [--mixed_precision]

1. Input pipeline. A light model (mean pooling + logistic head, rgb D=1024, 3862 classes) is
   trained with model.fit at batch 80 on two inputs, in alternating rounds:
     reader     pooling_models.data.frame_dataset over TFRecords written with
                features.records (synthetic quantized frames, 200-300 per video, cached in
                --cache_dir) with the ids dropped, as pooling_models.training does
     in memory  batches drawn once from that same reader (so padded the same way) and held
                as tensors; the dataset only hands them over
   Each fit call runs --warmup_steps untimed steps, then --steps timed ones inside one pass
   over the records. Target: reader / in memory >= 0.9. The reader alone (no model) is timed
   too, to tell which side a shortfall comes from: on a machine where the reader and the step
   share the same cores, their CPU-seconds per batch bound the ratio.
2. NetVLAD (hidden 1024, gating on, MoE head with 2 mixtures, 300 frames, batch 80), one child
   process per --clusters value: parameter count, examples/s over --netvlad_steps steps
   after one warm-up step, and peak RSS (max of wait4's ru_maxrss and VmRSS sampled every
   50 ms).

--mixed_precision sets the mixed_float16 policy in both parts; it is meant for GPU machines,
where the NetVLAD children also report the GPU's peak memory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import extract_memory
import keras
import numpy as np
import tensorflow as tf

from features.formats import DEFAULT_MAX_FRAMES, MAX_PCA_DIMS, RGB_KEY
from features.quantize import dequantize, quantize
from features.records import encode_frame_example
from pooling_models.builder import build_model, model_inputs
from pooling_models.data import frame_dataset
from pooling_models.model_config import NUM_FRAMES_KEY, ModelConfig
from pooling_models.training import FitSettings

DEFAULT_CACHE_DIR = "/tmp/framevlad-bench-train"
NUM_CLASSES = 3862
BATCH_SIZE = 80
MIN_FRAMES = 200
MAX_LABELS = 5
SHARDS = 4
MEMORY_BATCHES = 10  # distinct in-memory batches, cycled (each is 98 MB of float32 frames)
INPUT_TARGET = 0.9  # reader / in memory
MB = 1_000_000


@dataclass
class Timing:
    """Wall and CPU seconds (all threads of this process) over `steps` batches."""

    steps: int
    wall_s: float
    cpu_s: float

    @property
    def examples_per_s(self) -> float:
        return self.steps * BATCH_SIZE / self.wall_s

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s


class StepClock(keras.callbacks.Callback):
    """Wall and CPU time at the end of every training batch (synchronous: not async_safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def window(self, first: int) -> Timing:
        """From the end of batch `first - 1` to the end of the last batch."""
        (wall_0, cpu_0), (wall_1, cpu_1) = self.marks[first - 1], self.marks[-1]
        return Timing(len(self.marks) - first, wall_1 - wall_0, cpu_1 - cpu_0)


def ensure_records(cache_dir: str, videos: int, seed: int = 0) -> list[str]:
    """SHARDS TFRecord files of `videos` frame-level records, written once and kept."""
    folder = os.path.join(
        cache_dir, f"{videos}videos_{MIN_FRAMES}-{DEFAULT_MAX_FRAMES}frames_seed{seed}"
    )
    paths = [os.path.join(folder, f"train-{i:02d}-of-{SHARDS:02d}.tfrecord") for i in range(SHARDS)]
    if all(os.path.exists(path) for path in paths):
        return paths
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for shard, path in enumerate(paths):
        partial = path + ".partial"  # renamed when complete, so a killed run leaves no shard
        with tf.io.TFRecordWriter(partial) as writer:
            for video in range(shard, videos, SHARDS):
                num_frames = int(rng.integers(MIN_FRAMES, DEFAULT_MAX_FRAMES + 1))
                whitened = rng.standard_normal((num_frames, MAX_PCA_DIMS), dtype=np.float32)
                labels = rng.choice(NUM_CLASSES, int(rng.integers(1, MAX_LABELS + 1)), False)
                writer.write(
                    encode_frame_example(f"v{video:05d}", labels, {RGB_KEY: quantize(whitened)})
                )
        os.replace(partial, path)
    print(f"wrote {videos} videos to {folder} in {time.perf_counter() - start:.0f} s")
    return paths


def compiled(config: ModelConfig) -> keras.Model:
    """build_model + the optimizer and loss of pooling_models.training.fit."""
    settings = FitSettings()
    model = build_model(config)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate, clipnorm=settings.clip_norm),
        loss=keras.losses.BinaryCrossentropy(),
    )
    return model


def reader(paths: list[str], model: keras.Model) -> tf.data.Dataset:
    """frame_dataset as train_pool reads it, ids dropped (pooling_models.training.without_ids)."""
    dataset = frame_dataset(
        paths, num_classes=NUM_CLASSES, batch_size=BATCH_SIZE, training=True, seed=0
    )
    return dataset.map(lambda inputs, labels: (model_inputs(model, inputs), labels))


def in_memory(batches: list[tuple]) -> tf.data.Dataset:
    """The given batches, repeated; the dataset holds them and copies nothing per step."""
    parts = [tf.data.Dataset.from_tensors(batch) for batch in batches]
    return functools.reduce(tf.data.Dataset.concatenate, parts).repeat()


def fit_timing(model: keras.Model, dataset: tf.data.Dataset, warmup: int, steps: int) -> Timing:
    clock = StepClock()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[clock], verbose=0)
    return clock.window(warmup)


def reader_alone(dataset: tf.data.Dataset, warmup: int, steps: int) -> Timing:
    batches = iter(dataset)
    for _ in range(warmup):
        next(batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(batches)
    return Timing(steps, time.perf_counter() - wall, time.process_time() - cpu)


def input_pipeline(args: argparse.Namespace) -> None:
    paths = ensure_records(args.cache_dir, (args.warmup_steps + args.steps) * BATCH_SIZE)
    model = compiled(ModelConfig(pooling="mean", head="logistic"))
    memory = in_memory(list(reader(paths, model).take(MEMORY_BATCHES)))
    rows: dict[str, list[Timing]] = {"in memory": [], "reader": []}
    for round_index in range(args.rounds):
        for name in rows:
            dataset = memory if name == "in memory" else reader(paths, model)
            rows[name].append(fit_timing(model, dataset, args.warmup_steps, args.steps))
            timing = rows[name][-1]
            print(f"round {round_index + 1} {name}: {timing.examples_per_s:.0f} examples/s, "
                  f"{timing.cores:.2f} cores busy")  # fmt: skip
    alone = reader_alone(reader(paths, model), args.warmup_steps, args.steps)

    print(f"\nlight model: mean pooling + logistic head, {model.count_params():,} parameters; "
          f"batch {BATCH_SIZE}, {args.steps} timed steps after {args.warmup_steps} "
          "per fit call")  # fmt: skip
    print("\n| input | round | wall s | cores busy | examples/s |\n|---|---:|---:|---:|---:|")
    totals = {}
    for name, timings in rows.items():
        for round_index, timing in enumerate(timings, 1):
            print(f"| {name} | {round_index} | {timing.wall_s:.2f} | {timing.cores:.2f} | "
                  f"{timing.examples_per_s:.0f} |")  # fmt: skip
        total = Timing(
            sum(t.steps for t in timings),
            sum(t.wall_s for t in timings),
            sum(t.cpu_s for t in timings),
        )
        totals[name] = total
        print(f"| {name} | all | {total.wall_s:.2f} | {total.cores:.2f} | "
              f"{total.examples_per_s:.0f} |")  # fmt: skip
    print(f"| reader alone, no model | | {alone.wall_s:.2f} | {alone.cores:.2f} | "
          f"{alone.examples_per_s:.0f} |")  # fmt: skip
    ratio = totals["reader"].examples_per_s / totals["in memory"].examples_per_s
    verdict = "met" if ratio >= INPUT_TARGET else "MISSED"
    per_round = ", ".join(
        f"{r.examples_per_s / m.examples_per_s:.2f}"
        for r, m in zip(rows["reader"], rows["in memory"], strict=True)
    )
    print(f"\nreader / in memory: {ratio:.2f} (rounds: {per_round}); "
          f"target ≥ {INPUT_TARGET:g} {verdict}")  # fmt: skip
    # Where the reader and the step share the cores, a fed step costs both their CPU time and
    # the machine gives at most all its cores, while the in-memory step ran at `memory.cores`.
    memory = totals["in memory"]
    step_cpu = memory.cpu_s / memory.steps
    read_cpu = alone.cpu_s / alone.steps
    bound = os.cpu_count() * step_cpu / (memory.cores * (step_cpu + read_cpu))
    print(f"CPU-ms per batch: train step {1000 * step_cpu:.1f}, reader {1000 * read_cpu:.1f}; "
          f"bound on the ratio with both on these {os.cpu_count()} cores: "
          f"{os.cpu_count()} x step / (in-memory cores busy x (step + reader)) = "
          f"{min(bound, 1.0):.2f}")  # fmt: skip


def netvlad_config(clusters: int) -> ModelConfig:
    return ModelConfig(
        pooling="netvlad",
        num_classes=NUM_CLASSES,
        cluster_size=clusters,
        hidden_size=1024,
        gating=True,
        head="moe",
        num_mixtures=2,
    )


def netvlad_child(clusters: int, steps: int, result_path: str) -> None:
    """Trains netvlad_config(clusters) on one in-memory batch of 300-frame videos."""
    start = time.perf_counter()
    model = compiled(netvlad_config(clusters))
    rng = np.random.default_rng(0)
    levels = quantize(rng.standard_normal((BATCH_SIZE, DEFAULT_MAX_FRAMES, MAX_PCA_DIMS)))
    inputs = {
        RGB_KEY: tf.constant(dequantize(levels)),  # [B, 300, 1024] float32
        NUM_FRAMES_KEY: tf.fill([BATCH_SIZE], DEFAULT_MAX_FRAMES),
    }
    labels = np.zeros((BATCH_SIZE, NUM_CLASSES), np.float32)
    labels[np.arange(BATCH_SIZE), rng.integers(0, NUM_CLASSES, BATCH_SIZE)] = 1
    built_s = time.perf_counter() - start
    clock = StepClock()
    warmup = 1  # traces the step and creates the optimizer's slots
    model.fit(
        tf.data.Dataset.from_tensors((inputs, tf.constant(labels))).repeat(),
        epochs=1,
        steps_per_epoch=warmup + steps,
        callbacks=[clock],
        verbose=0,
    )
    walls = [wall for wall, _ in clock.marks]
    step_s = [end - begin for begin, end in zip(walls, walls[1:], strict=False)]
    timing = clock.window(warmup)
    result = {
        "parameters": model.count_params(),
        "build_s": built_s,
        "first_step_s": walls[0] - start - built_s,
        "step_s": step_s,
        "examples_per_s": timing.examples_per_s,
        "cores": timing.cores,
    }
    if tf.config.list_physical_devices("GPU"):
        result["gpu_peak_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / MB
    with open(result_path, "w") as result_file:
        json.dump(result, result_file)


def peak_rss(command: list[str], log_path: str) -> tuple[float, float]:
    """Runs `command` -> (peak RSS in MB, wall seconds); exits with its log if it fails."""
    peak, wall_s, _ = extract_memory.peak_rss(command, log_path)
    return peak, wall_s


def netvlad_sizes(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="framevlad-train-") as work:
        for clusters in args.clusters:
            result_path = os.path.join(work, f"netvlad{clusters}.json")
            command = [
                sys.executable, os.path.abspath(__file__), "--netvlad_child", str(clusters),
                "--netvlad_steps", str(args.netvlad_steps), "--result", result_path,
            ] + (["--mixed_precision"] if args.mixed_precision else [])  # fmt: skip
            peak_mb, wall_s = peak_rss(command, os.path.join(work, f"netvlad{clusters}.log"))
            with open(result_path) as result_file:
                result = json.load(result_file)
            rows.append((clusters, peak_mb, wall_s, result))
            steps = ", ".join(f"{seconds:.1f}" for seconds in result["step_s"])
            print(f"netvlad K={clusters}: build {result['build_s']:.1f} s, first step "
                  f"{result['first_step_s']:.1f} s, timed steps {steps} s")  # fmt: skip

    gpu = any("gpu_peak_mb" in result for *_, result in rows)
    print(f"\nNetVLAD: hidden 1024, gating, MoE 2 mixtures, batch {BATCH_SIZE}, "
          f"{DEFAULT_MAX_FRAMES} frames, D={MAX_PCA_DIMS}, {NUM_CLASSES} classes")  # fmt: skip
    header = (
        "| K | parameters | weights+grads+Adam MB | timed steps | s/step | cores busy "
        "| examples/s | peak RSS MB |"
    )
    print("\n" + header + (" GPU peak MB |" if gpu else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""))
    for clusters, peak_mb, _, result in rows:
        steps = len(result["step_s"])
        line = (
            f"| {clusters} | {result['parameters']:,} | {result['parameters'] * 16 / MB:.0f} | "
            f"{steps} | "
            f"{BATCH_SIZE / result['examples_per_s']:.2f} | {result['cores']:.2f} | "
            f"{result['examples_per_s']:.1f} | {peak_mb:.0f} |"
        )
        print(line + (f" {result.get('gpu_peak_mb', 0):.0f} |" if gpu else ""))


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup_steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clusters", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--netvlad_steps", type=int, default=3)
    parser.add_argument("--mixed_precision", action="store_true")
    parser.add_argument("--skip_input", action="store_true", help="only the NetVLAD part")
    parser.add_argument("--netvlad_child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if args.netvlad_child:
        netvlad_child(args.netvlad_child, args.netvlad_steps, args.result)
        return 0

    gpus = len(tf.config.list_physical_devices("GPU"))
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"{gpus} GPUs, policy {keras.config.dtype_policy().name}; "
          f"load average {load_average()}")  # fmt: skip
    if not args.skip_input:
        input_pipeline(args)
    netvlad_sizes(args)
    print(f"\nload average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
