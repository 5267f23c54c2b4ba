#!/usr/bin/env bash
# Runs extract_features on Dataflow, by default with one NVIDIA L4 per worker, and waits for the
# job to finish (Ctrl-C stops the wait, not the job).
#
#   PROJECT=my-project REGION=us-central1 BUCKET=gs://my-bucket \
#   IMAGE=us-central1-docker.pkg.dev/my-project/framevlad/worker:TAG \
#   INPUT=gs://my-bucket/videos OUTPUT=gs://my-bucket/features \
#   infra/launch_dataflow.sh --labels gs://my-bucket/labels.csv --num_shards 6000
#
# Required environment:
#   PROJECT, REGION   the Google Cloud project and the Dataflow region
#   BUCKET            gs://bucket[/prefix] for Beam's temp/ and staging/ files
#   IMAGE             the worker image, built from infra/Dockerfile at the commit you launch from
#   INPUT, OUTPUT     extract_features --input and --output (gs:// paths)
# Optional environment:
#   MACHINE_TYPE      worker type, default g2-standard-4 (4 vCPUs, 1 L4). Decoding is CPU-bound:
#                     infra/README.md recommends g2-standard-16 for large libraries
#   MAX_WORKERS       autoscaling ceiling, default 20
#   GPU_TYPE          default nvidia-l4 (G2 machines); nvidia-tesla-t4 goes with N1 types; none
#                     runs the CNN on the workers' CPUs (e.g. MACHINE_TYPE=n2-highcpu-16)
#   HARNESS_THREADS   work threads per Python process on a worker; default with SDK_PROCESSES=one:
#                     MACHINE_TYPE's vCPUs, with per-vcpu: Dataflow's default
#   SDK_PROCESSES     one (default): one Python process per worker, so the model is loaded once
#                     and one CUDA context owns the GPU. per-vcpu: Dataflow's default of one
#                     process per vCPU, with NVIDIA MPS sharing the GPU between them
#   DISK_SIZE_GB      worker boot disk, default 50 (the image is several GB)
#   PYTHON            the interpreter with framevlad installed, default python3
#   DRY_RUN=1         build and validate the job and print its settings; submit nothing
# Any further arguments go to extract_features as they are (its own flags and Beam's).
set -euo pipefail

die() {
  echo "launch_dataflow.sh: $*" >&2
  exit 2
}

for name in PROJECT REGION BUCKET IMAGE INPUT OUTPUT; do
  [[ -n "${!name:-}" ]] || die "$name is required (see the top of $0)"
done
[[ "$BUCKET" == gs://* ]] || die "BUCKET=$BUCKET: must be a gs:// URL"
BUCKET="${BUCKET%/}"

MACHINE_TYPE="${MACHINE_TYPE:-g2-standard-4}"
MAX_WORKERS="${MAX_WORKERS:-20}"
GPU_TYPE="${GPU_TYPE:-nvidia-l4}"
SDK_PROCESSES="${SDK_PROCESSES:-one}"
DISK_SIZE_GB="${DISK_SIZE_GB:-50}"
PYTHON="${PYTHON:-python3}"

HARNESS_THREADS="${HARNESS_THREADS:-}"
if [[ -z "$HARNESS_THREADS" && "$SDK_PROCESSES" == one ]]; then
  if [[ "$MACHINE_TYPE" =~ ^[a-z0-9]+-(standard|highmem|highcpu)-([0-9]+)$ ]]; then
    HARNESS_THREADS="${BASH_REMATCH[2]}"
  else
    die "MACHINE_TYPE=$MACHINE_TYPE: set HARNESS_THREADS to its number of vCPUs"
  fi
fi
for name in MAX_WORKERS DISK_SIZE_GB ${HARNESS_THREADS:+HARNESS_THREADS}; do
  [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || die "$name=${!name}: must be a positive integer"
done

# One Python process per worker VM is the default. The job is bound by video decoding on the
# CPU. A single process still keeps every vCPU busy, for two reasons: each video's H.264
# decoder runs FFmpeg frame threads, and PyAV releases the GIL while it demuxes, decodes and
# scales, so HARNESS_THREADS videos decode in parallel. Meanwhile the GPU holds one model and one
# CUDA context and receives batches from every thread. Dataflow's default of one process per
# vCPU would load the model once per vCPU, run that many CUDA contexts on one GPU, and leave
# the GPU just as idle, since the CPU limits throughput either way.
accelerator=""
if [[ "$GPU_TYPE" != none ]]; then
  accelerator="worker_accelerator=type:${GPU_TYPE};count:1;install-nvidia-driver"
fi
case "$SDK_PROCESSES" in
  one) process_flags=(--experiments no_use_multiple_sdk_containers) ;;
  per-vcpu)
    accelerator="${accelerator:+$accelerator;use_nvidia_mps}"
    process_flags=()
    ;;
  *) die "SDK_PROCESSES=$SDK_PROCESSES: one or per-vcpu" ;;
esac

args=(
  --input "$INPUT"
  --output "$OUTPUT"
  --runner DataflowRunner
  --project "$PROJECT"
  --region "$REGION"
  --temp_location "$BUCKET/tmp"
  --staging_location "$BUCKET/staging"
  --sdk_container_image "$IMAGE"
  --machine_type "$MACHINE_TYPE"
  --max_num_workers "$MAX_WORKERS"
  --disk_size_gb "$DISK_SIZE_GB"
  --experiments use_runner_v2
)
if [[ -n "$accelerator" ]]; then
  args+=(--dataflow_service_options "$accelerator")
fi
# The ${a[@]+...} form expands an empty array safely under `set -u` in bash 3.2 (macOS).
args+=(${process_flags[@]+"${process_flags[@]}"})
if [[ -n "$HARNESS_THREADS" ]]; then
  args+=(--number_of_worker_harness_threads "$HARNESS_THREADS")
fi
case "${DRY_RUN:-0}" in
  0 | "") ;;
  # Beam's TestOptions flag: DataflowRunner builds the job and returns before submitting it.
  # Its value is a string, so `--dry_run=False` would also count as a dry run: pass it only
  # when wanted.
  1) args+=(--dry_run=True) ;;
  *) die "DRY_RUN=$DRY_RUN: 1 for a dry run, or leave it unset" ;;
esac

exec "$PYTHON" -m pipelines.extract_features "${args[@]}" "$@"
