"""How a Beam job of ours uses the machine it runs on: the CNN's batch, precision and XLA, and
how many videos decode at once. Flags shared by extract_features and tag_videos.

Decode workers are threads of the one process that holds each stream's model (Beam's
RunInference shares it per process): N videos decode at once (PyAV and TensorFlow release
the GIL) and feed the one model its fixed-shape batches. On the local runner that is
DirectRunner's in-memory mode with N workers: it splits each stage's input into N parts run
by N in-process workers on a thread pool. Not its multi_threading mode, which runs the same
threads behind a gRPC channel that hands a step's exception back as text, so the job's
one-line errors (disk full, a damaged record) would become tracebacks. On Dataflow, N harness
threads per worker process (infra/launch_dataflow.sh already runs one process per VM).

Light on purpose (no TensorFlow, Keras or Beam import at module level): `--help` answers
at once.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from features.cli import Parser, UsageError
from features.formats import FLOAT32, PRECISIONS
from features.streams import FeatureSpec
from pipelines.beam_options import passed_option, runs_on_dataflow

AUTO = "auto"
DEFAULT_FRAMES_PER_BATCH = 32
# --jit_compile's words -> FrameEmbedder's jit_compile (None: XLA where a GPU is present).
JIT_SETTINGS = {AUTO: None, "on": True, "off": False}
_LOCAL_WORKER_FLAGS = ("--direct_num_workers", "--direct_running_mode")
# Beam warns that in-memory workers beyond one have no effect; its own code runs them in
# parallel (ParallelBundleManager), which benchmarks/direct_workers.py measures.
_BEAM_RUNNER_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner"
_NO_EFFECT_WARNING = "If direct_num_workers is not equal to 1"
_DATAFLOW_THREADS_FLAG = "--number_of_worker_harness_threads"


def count_or_auto(text: str) -> int:
    """An argparse type: "auto" -> 0 (settled for the machine later), else an integer >= 1."""
    if text == AUTO:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is neither auto nor an integer >= 1")
    return value


count_or_auto.__name__ = "integer or auto"


def add_compute_flags(parser: Parser) -> None:
    """--frames_per_batch (alias --batch_size), --precision, --jit_compile, --decode_workers."""
    parser.add_argument(
        "--frames_per_batch",
        type=count_or_auto,
        default=DEFAULT_FRAMES_PER_BATCH,
        help="frames per CNN batch (clip streams: as many pixels); auto: sized for the GPU's "
        f"free memory, {DEFAULT_FRAMES_PER_BATCH} without a GPU",
    )
    parser.add_alias("--batch_size", "--frames_per_batch")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=FLOAT32,
        help="mixed: convolutions and dense layers in float16 on tensor cores (GPUs of "
        "compute capability >= 7.0); features near float32's (README: measured agreement)",
    )
    parser.add_argument(
        "--jit_compile",
        choices=tuple(JIT_SETTINGS),
        default=AUTO,
        help="compile the CNNs with XLA; auto: on where a GPU is present (slower on CPUs)",
    )
    parser.add_argument(
        "--decode_workers",
        type=count_or_auto,
        default=AUTO,
        help="videos decoded at once by threads feeding one model per process; auto: this "
        "machine's cores on the local runner, Beam's harness threads on Dataflow",
    )


def check_precision_here(precision: str, beam_args: Sequence[str]) -> None:
    """--precision mixed on a local job whose GPU has no tensor cores: one line before any
    work (a Dataflow job is checked by its workers, which have the GPU)."""
    if runs_on_dataflow(beam_args):
        return
    from features.backbones import BackboneError
    from features.precision import check_precision

    try:
        check_precision(precision)
    except BackboneError as error:
        fix = "pass --precision float32"
        raise UsageError(str(error), f"--precision {precision}", fix) from None


def resolve_frames_per_batch(
    frames_per_batch: int, rgb: FeatureSpec, beam_args: Sequence[str]
) -> int:
    """--frames_per_batch as a number: 0 (auto) sized for this machine's GPU and rgb's frame.

    Auto is settled where the job is launched, which is where it runs on the local runner;
    Dataflow's workers are other machines, so a job there must pass a number."""
    if frames_per_batch:
        return frames_per_batch
    if runs_on_dataflow(beam_args):
        raise UsageError(
            "auto sizes batches for the GPU of the machine that launches the job, and "
            "Dataflow's workers are other machines",
            "--frames_per_batch auto",
            "pass a number for the workers' GPU (benchmarks/cnn_precision.py measures it)",
        )
    from features.backbones import BackboneError
    from features.precision import auto_frames_per_batch

    try:
        return auto_frames_per_batch((*rgb.frame_size, 3))
    except BackboneError as error:
        raise UsageError(str(error), "--frames_per_batch auto", "pass a number") from None


def local_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    return len(os.sched_getaffinity(0))


def with_decode_workers(decode_workers: int, beam_args: Sequence[str]) -> tuple[str, ...]:
    """Beam's flags for `decode_workers` (0: auto) added to `beam_args`.

    Beam's own settings of the same thing win when --decode_workers is left at auto, and
    conflict with an explicit --decode_workers (one line). Runners other than the local and
    Dataflow ones get `beam_args` unchanged."""
    given = tuple(beam_args)
    if runs_on_dataflow(given):
        if decode_workers and passed_option(given, _DATAFLOW_THREADS_FLAG) is None:
            return (*given, _DATAFLOW_THREADS_FLAG, str(decode_workers))
        if decode_workers:
            raise _conflict(_DATAFLOW_THREADS_FLAG)
        return given
    runner = (passed_option(given, "--runner") or "DirectRunner").lower()
    if runner not in ("direct", "directrunner"):
        return given
    own = [flag for flag in _LOCAL_WORKER_FLAGS if passed_option(given, flag) is not None]
    if own and decode_workers:
        raise _conflict(own[0])
    workers = decode_workers or local_cores()
    if own or workers == 1:
        return given
    logging.getLogger(_BEAM_RUNNER_LOGGER).addFilter(_drop_no_effect_warning)
    threads = ("--direct_num_workers", str(workers), "--direct_running_mode", "in_memory")
    return (*given, *threads)


def _drop_no_effect_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_NO_EFFECT_WARNING)


def _conflict(beam_flag: str) -> UsageError:
    return UsageError(
        "two settings of the same workers", f"--decode_workers and {beam_flag}", "pass one"
    )
