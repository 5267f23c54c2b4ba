"""How a stream's CNN computes on the machine at hand: its precision, XLA, its batch size.

Precision "mixed" runs the layers whose work tensor cores do, those that mix channels
through a kernel (convolutions, dense layers, inflated convolutions), on float16 inputs and
weights; everything else stays float32: the uint8 -> float preprocessing, batch norm,
activations, pooling, and depthwise convolutions (memory-bound, no tensor cores). Features
leave the model as float32, and the variables stay float32, so a mixed model holds the
float32 model's weights exactly.

Measured on CPU with random weights and synthetic frames, as bytes within +-1 level of
float32's after a PCA to half the dims and quantize (tests/features/test_precision.py):
- bfloat16 in place of float16: tiny 88 % (float16: 100 %), while tensor cores run both at
  the same rate on compute capability >= 8.0, and only float16 on 7.x;
- MobileNetV3-Small with every layer in float16 (Keras' "mixed_float16"): 1 % relative error
  in the features, 76-92 %; convolutions and dense layers only: 0.26 %, 97-99 %; depthwise
  ones in float32 as well (this module): 0.10 %, 99.0-99.8 %;
- InceptionV3 (this module): 0.47 %, 83 %. Its error grows steadily over its 94
  convolutions, no layer dominating, and its random-weight features vary little between
  frames (std 15 % of the mean), which whitening amplifies; ImageNet weights on real frames
  are what to judge it on (benchmarks/cnn_precision.py --weights --check_video).
"float32" on a GPU of compute capability >= 8.0 multiplies in TF32 (TensorFlow's default:
a 10-bit mantissa, as float16's, summed in float32); the benchmark measures its bytes too.
On a CPU "mixed" is the same float16 arithmetic, so tests there check the numerics a GPU
runs; it brings no speed there (3D convolutions run 9 times slower).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Sequence

import keras
import tensorflow as tf

from features.backbones import BackboneError
from features.formats import FLOAT32, MIXED, PRECISIONS
from features.inflate import InflatedConv

MIXED_COMPUTE_DTYPE = "float16"
# Tensor cores (float16 at many times the float32 rate) start at Volta; older GPUs run float16
# no faster, some (P4, compute capability 6.1) far slower.
MIN_MIXED_CAPABILITY = (7, 0)
CPU_FRAMES_PER_BATCH = 32  # the --frames_per_batch default, measured best on CPUs
# Past this a GPU batch is assumed to buy little throughput (benchmarks/cnn_precision.py
# --frames_per_batch N measures it), while it costs host memory: each decoded chunk of 256
# 299x299 frames is 69 MB, and every decode worker holds one.
MAX_AUTO_FRAMES_PER_BATCH = 256
# Peak live activations at inference, in float32 values per input value: InceptionV3's stem
# holds 2-3 M values per 299x299x3 frame (8-11x); 16 leaves room for convolution workspaces.
# Float32 in both precisions: "mixed" keeps the activations between convolutions float32.
ACTIVATION_VALUES_PER_INPUT_VALUE = 16
# Share of the free GPU memory one model's batches may take: others (a second stream's
# model, the decoder) share the GPU.
GPU_MEMORY_SHARE = 0.5
_NVIDIA_SMI_PATHS = ("nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi")


def gpus() -> list[tf.config.PhysicalDevice]:
    """The GPUs TensorFlow can use (none on a CPU-only build or machine)."""
    return tf.config.list_physical_devices("GPU")


def check_precision(precision: str) -> None:
    """A BackboneError (one line) for an unknown precision, or "mixed" on a GPU without
    tensor cores (compute capability < 7.0); a CPU runs mixed (see the module doc)."""
    if precision not in PRECISIONS:
        raise BackboneError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != MIXED:
        return
    for gpu in gpus():
        details = tf.config.experimental.get_device_details(gpu)
        capability = tuple(details.get("compute_capability") or MIN_MIXED_CAPABILITY)
        if capability < MIN_MIXED_CAPABILITY:
            name = details.get("device_name", gpu.name)
            raise BackboneError(
                f"--precision mixed: {name} (compute capability {capability[0]}.{capability[1]})"
                " has no float16 tensor cores; use --precision float32"
            )


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """`model` itself for "float32"; for "mixed" a copy whose channel-mixing kernel layers
    compute in float16 (see the module doc), with the same float32 weights and input."""
    check_precision(precision)
    if precision == FLOAT32:
        return model
    policy = keras.dtype_policies.serialize(keras.DTypePolicy(f"mixed_{MIXED_COMPUTE_DTYPE}"))

    def clone(layer: keras.Operation) -> keras.Operation:
        config = layer.get_config()  # keras.ops nodes in a graph are Operations: kept as is
        if runs_on_tensor_cores(layer):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    mixed = keras.models.clone_model(model, clone_function=clone, recursive=True)
    mixed.set_weights(model.get_weights())
    return mixed


def runs_on_tensor_cores(layer: keras.Operation) -> bool:
    """A layer that mixes channels through a kernel: a convolution (not depthwise), a dense
    layer, an inflated convolution (not depthwise)."""
    if not isinstance(layer, keras.layers.Layer) or getattr(layer, "kernel", None) is None:
        return False
    if isinstance(layer, InflatedConv):
        return not layer.depthwise
    return not isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D)


def resolve_jit_compile(jit_compile: bool | None) -> bool:
    """None ("auto") compiles with XLA where a GPU is present. On CPU XLA measured slower
    (InceptionV3 30 vs 37 frames/s, MobileNetV3-Small 4 vs 47), so auto leaves it off there."""
    return bool(gpus()) if jit_compile is None else jit_compile


def auto_frames_per_batch(
    input_shape: Sequence[int],
    gpu_free_bytes: int | None = None,
    max_frames: int = MAX_AUTO_FRAMES_PER_BATCH,
) -> int:
    """Samples of `input_shape` (one sample, no batch axis) per CNN batch for this machine.

    Without a GPU: CPU_FRAMES_PER_BATCH. With one: the largest power of two whose estimated
    activations (ACTIVATION_VALUES_PER_INPUT_VALUE float32 values per input value) fit
    GPU_MEMORY_SHARE of `gpu_free_bytes` (read from nvidia-smi when None), at most
    `max_frames`. For --frames_per_batch pass the rgb frame shape: the clip and flow
    streams' batches hold as many pixels (FeatureSpec.samples_per_batch).
    """
    if gpu_free_bytes is None:
        if not gpus():
            return CPU_FRAMES_PER_BATCH
        gpu_free_bytes = free_gpu_memory()
        if gpu_free_bytes is None:  # no nvidia-smi: size for the smallest current GPU (T4)
            gpu_free_bytes = 15 << 30
    sample_bytes = math.prod(input_shape) * ACTIVATION_VALUES_PER_INPUT_VALUE * 4
    fitting = int(gpu_free_bytes * GPU_MEMORY_SHARE) // sample_bytes
    if fitting < 1:
        raise BackboneError(
            f"--frames_per_batch auto: one {list(input_shape)} sample needs about "
            f"{sample_bytes >> 20} MiB of GPU memory, {gpu_free_bytes >> 20} MiB are free"
        )
    return min(1 << (fitting.bit_length() - 1), max_frames)


def free_gpu_memory() -> int | None:
    """Free bytes on the first GPU as the driver reports them (nvidia-smi), None when there is
    no nvidia-smi (Dataflow images keep it in /usr/local/nvidia/bin, off the PATH)."""
    for command in _NVIDIA_SMI_PATHS:
        executable = shutil.which(command)
        if executable is None:
            continue
        query = [executable, "--query-gpu=memory.free", "--format=csv,noheader,nounits"]
        try:
            lines = subprocess.run(query, capture_output=True, text=True, check=True, timeout=30)
            return int(lines.stdout.split()[0]) << 20  # MiB
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None
    return None
