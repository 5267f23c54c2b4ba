#!/usr/bin/env bash
# Every GPU measurement of issue #13 in one run, for a 16-core machine with one NVIDIA GPU.
#
#   benchmarks/device_check.sh [OUTPUT_FOLDER]      # default: $OUT, else /tmp/device_check
#   DEVICE_CHECK_CPU=1 benchmarks/device_check.sh   # the same steps at tiny sizes, no GPU
#
# Steps (each under its own `timeout`; a failed or timed-out step is reported and the next
# one runs):
#   decode_cpu  benchmarks/decode_modes.py --decode_device cpu: decode-only exact and fast on
#               the B-frame 720p30 H.264 corpus, one video at a time and one process per core
#   decode_gpu  the same on NVDEC (--decode_device gpu); skipped, with a note, on CPU
#   cnn         benchmarks/cnn_precision.py: bare InceptionV3 float32 vs mixed images/s at
#               --frames_per_batch auto, and mixed's bytes within +-1 of float32's
#   e2e         benchmarks/extract_throughput.py --rgb_only: extract_features end to end with
#               --precision mixed --decode_workers 16 --frames_per_batch auto (decode device:
#               the job's default, auto = NVDEC where it works) on 2 x 30 s 720p30 clips, each
#               40 times in the input (80 videos, 2,400 sampled frames), against decode-only
#               (the same videos, 16 at once, same device) and the bare CNN (same precision and
#               batch), with the GPU's utilisation sampled during each job
#   train       benchmarks/train_input.py --skip_reads: NetVLAD K=64 fed from local records and
#               streamed from a GCS emulator vs the in-memory step rate (1,600 videos x 300
#               frames, batch 80, 5 + 15 steps)
# Output folder: device_check.log (machine facts, then every step's output, then the summary),
# summary.txt (the table alone), steps/<step>.log, gpu_util.csv (nvidia-smi every second for
# the whole run). Exit status 0 when every step ran to its end (a missed target included),
# 1 when one failed or timed out, 2 when the script could not start.
#
# Time: the step limits below add up to 470 s, so the script ends within 8 minutes whatever
# happens. Estimated (not measured: no GPU was lent when it was written) on 16 cores + 1 GPU:
# decode_cpu 60-100 s (about 40 s of it encoding the corpus on a machine without the cache),
# decode_gpu 40-70 s, cnn 50-80 s (two XLA compiles of InceptionV3, 5 s timed each, a strict
# float32 reference), e2e 90-145 s (encoding 2 x 30 s, decode-only ~10 s, two jobs of ~30 s
# fixed cost each), train 40-75 s (writing and uploading 560 MB of records dominates).
# A step that reaches its limit is reported as timed out with what it printed so far.
# On a fresh machine the corpora are encoded inside decode_cpu and e2e. To skip that, encode
# them beforehand into a folder that travels with the working tree, e.g.
#   DEVICE_CHECK_CACHE=build/device_check_cache DEVICE_CHECK_CPU=1 benchmarks/device_check.sh
# here (about 57 MB: /build/ is ignored by git), then carry build/device_check_cache and pass
# the same DEVICE_CHECK_CACHE on the GPU machine.
#
# Environment: DEVICE_CHECK_CPU=1 (tiny sizes on the CPU), DEVICE_CHECK_CACHE (encoded
# corpora; default /tmp/framevlad-bench, the benchmarks' own cache), PYTHON (default
# .venv/bin/python, else python3), DECODE_WORKERS (default 16).
set -u -o pipefail

prog=device_check.sh
out=$(realpath -m "${1:-${OUT:-/tmp/device_check}}")
cd "$(dirname "$0")/.." || exit 2
# This working tree's code, whatever the environment installed (an editable install may
# point at another checkout).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cpu_mode=${DEVICE_CHECK_CPU:-0}
cache=${DEVICE_CHECK_CACHE:-/tmp/framevlad-bench}
workers=${DECODE_WORKERS:-16}
if [[ -n ${PYTHON:-} ]]; then
    py=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python3
fi

if [[ $cpu_mode != 1 ]] && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "$prog: error: no NVIDIA GPU (nvidia-smi): run on the GPU machine" >&2
    exit 2
fi
if ! mkdir -p "$out/steps" 2>/dev/null || [[ ! -w $out ]]; then
    echo "$prog: error: cannot write the output folder ($out): pass a writable folder" >&2
    exit 2
fi
if ! "$py" -c "import features" 2>/dev/null; then
    echo "$prog: error: $py cannot import framevlad (PYTHON): install it, pip install -e \".[gpu,test]\"" >&2
    exit 2
fi

log=$out/device_check.log
: >"$log"
export TF_CPP_MIN_LOG_LEVEL=2

{
    echo "# device_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown) ($(git status --porcelain 2>/dev/null | wc -l) paths changed in the working tree)"
    echo "nproc: $(nproc); memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "python: $("$py" -c 'import sys; print(sys.version.split()[0])') ($py)"
    "$py" -c 'import av, tensorflow as tf; print(f"tensorflow {tf.__version__}, PyAV {av.__version__}")' 2>/dev/null
    if [[ $cpu_mode == 1 ]]; then
        echo "mode: DEVICE_CHECK_CPU=1 (tiny sizes on the CPU; not a GPU measurement)"
    else
        echo "nvidia-smi -L:"
        nvidia-smi -L
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    fi
    echo "cache: $cache"
} 2>&1 | tee -a "$log"

sampler=
if [[ $cpu_mode != 1 ]]; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 \
        >"$out/gpu_util.csv" 2>/dev/null &
    sampler=$!
fi
stop_sampler() {
    if [[ -n $sampler ]]; then
        kill "$sampler" 2>/dev/null
        wait "$sampler" 2>/dev/null
        sampler=
    fi
}
trap stop_sampler EXIT

declare -A status
order=(decode_cpu decode_gpu cnn e2e train)
# What each step prints once it has measured everything: exit 1 with it means a target the
# script checks itself was missed (decode_modes, cnn_precision), not a crash.
declare -A finished=(
    [decode_cpu]="targets (met|NOT met)" [decode_gpu]="targets (met|NOT met)"
    [cnn]="of bytes within [+]-1" [e2e]="[|] ratio [|] value [|]" [train]="^cores: "
)

# run_step NAME LIMIT_S COMMAND...: output to steps/NAME.log and the main log; status kept.
run_step() {
    local name=$1 limit=$2 rc start=$SECONDS
    shift 2
    echo "=== $name (limit ${limit} s): $*" | tee -a "$log"
    timeout --kill-after=5 "$limit" "$@" >"$out/steps/$name.log" 2>&1
    rc=$?
    cat "$out/steps/$name.log" >>"$log"
    if [[ $rc == 0 ]]; then
        status[$name]="ok, $((SECONDS - start)) s"
    elif [[ $rc == 124 || $rc == 137 ]]; then
        status[$name]="TIMED OUT after $limit s"
    elif [[ $rc == 1 ]] && grep -Eq "${finished[$name]}" "$out/steps/$name.log"; then
        status[$name]="ok, $((SECONDS - start)) s (exit 1: a target it checks was missed)"
    else
        status[$name]="FAILED: exit $rc after $((SECONDS - start)) s (see steps/$name.log)"
    fi
    echo "=== $name: ${status[$name]}" | tee -a "$log"
}

if [[ $cpu_mode == 1 ]]; then
    run_step decode_cpu 300 "$py" benchmarks/decode_modes.py --rounds 1 \
        --cache_dir "$cache/decode_modes" --decode_device cpu
    status[decode_gpu]="skipped: no GPU (DEVICE_CHECK_CPU=1)"
    echo "=== decode_gpu: ${status[decode_gpu]}" | tee -a "$log"
    run_step cnn 300 "$py" benchmarks/cnn_precision.py --backbones inception_v3 \
        --precisions float32,mixed --frames_per_batch 8 --seconds 1 --check_samples 32
    run_step e2e 300 "$py" benchmarks/extract_throughput.py --rgb_only --clips 2 --seconds 30 \
        --repeat 1 --cache_dir "$cache" --frames_per_batch auto --precision mixed \
        --decode_workers 2
    run_step train 300 "$py" benchmarks/train_input.py --skip_reads --shards 2 --videos 4 \
        --frames 20 --batch_size 4 --warmup_steps 1 --steps 1 --rounds 1
else
    run_step decode_cpu 100 "$py" benchmarks/decode_modes.py --rounds 1 \
        --cache_dir "$cache/decode_modes" --decode_device cpu
    run_step decode_gpu 70 "$py" benchmarks/decode_modes.py --rounds 1 \
        --cache_dir "$cache/decode_modes" --decode_device gpu
    run_step cnn 80 "$py" benchmarks/cnn_precision.py --backbones inception_v3 \
        --precisions float32,mixed --frames_per_batch auto --seconds 5 --check_samples 256
    run_step e2e 145 "$py" benchmarks/extract_throughput.py --rgb_only --clips 2 --seconds 30 \
        --repeat 40 --cache_dir "$cache" --frames_per_batch auto --precision mixed \
        --decode_workers "$workers"
    run_step train 75 "$py" benchmarks/train_input.py --skip_reads --shards 16 --videos 100 \
        --frames 300 --batch_size 80 --warmup_steps 5 --steps 15 --rounds 1
fi
stop_sampler

# The summary: each target's number as the step printed it ("-" where the step gave none).
"$py" - "$out" "$cpu_mode" <<'PYTHON' | tee "$out/summary.txt" | tee -a "$log"
import re
import sys
from pathlib import Path

out, cpu_mode = Path(sys.argv[1]), sys.argv[2] == "1"


def text(step: str) -> str:
    path = out / "steps" / f"{step}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def found(pattern: str, step: str, group: int = 1) -> str:
    match = re.search(pattern, text(step), re.MULTILINE)
    return match.group(group) if match else "-"


def rate(label: str) -> str:
    """The sampled frames/s column of an extract_throughput table row."""
    return found(rf"^\| {re.escape(label)} \|(?:[^|]*\|){{3}}\s*([\d.]+) \|", "e2e")


def verdict(value: str, target: float) -> str:
    try:
        return "met" if float(value) >= target else "MISSED"
    except ValueError:
        return "not measured"


saturated = r"every core decoding \(([\d.]+) -> ([\d.]+) sampled frames/s\)"
cnn_rate = r"^rgb/inception_v3\s+{}\s+jit=\S+\s+batch\s+(\d+):\s+([\d.]+) samples/s"
rows = [
    ("decode-only, CPU, exact, one process per core (sampled frames/s)",
     found(saturated, "decode_cpu", 1), ""),
    ("decode-only, CPU, fast, one process per core", found(saturated, "decode_cpu", 2), ""),
    ("decode-only, GPU (NVDEC), exact, one process per core", found(saturated, "decode_gpu", 1), ""),
    ("decode-only, GPU (NVDEC), fast, one process per core", found(saturated, "decode_gpu", 2), ""),
    ("fast / exact, CPU, one process per core",
     found(r"([\d.]+) x with every core decoding", "decode_cpu"), ">= 1.6"),
    ("bare InceptionV3 float32 (images/s)", found(cnn_rate.format("float32"), "cnn", 2), ""),
    ("bare InceptionV3 mixed (images/s)", found(cnn_rate.format("mixed"), "cnn", 2), ">= 3000"),
    ("mixed: bytes within +-1 of float32 (%)",
     found(r"^rgb/inception_v3\s+mixed.*?([\d.]+)% of bytes within", "cnn"), ">= 99"),
    ("e2e: decode-only, same videos and workers (sampled frames/s)",
     rate("decode-only (iter_frame_chunks)"), ""),
    ("e2e: bare CNN, same precision and batch", rate("bare CNN (FrameEmbedder)"), ""),
    ("e2e: pipeline, job wall time", rate("pipeline, job wall time"), ""),
    ("e2e: pipeline, steady state", rate("pipeline, steady state (difference of the two)"),
     ">= 340"),
    ("e2e: pipeline steady state / min(decode-only, bare CNN)",
     found(r"^\| pipeline / min\(decode, CNN\), steady state \| ([\d.]+)", "e2e"), ">= 0.8"),
    ("e2e: GPU utilisation during the job, mean (%)",
     found(r"^  out job: GPU utilisation mean (\d+) %", "e2e"), ""),
    ("train: NetVLAD K=64 in memory (examples/s)",
     found(r"^\| in memory \|(?:[^|]*\|){3}\s*([\d.]+) \|", "train"), ""),
    ("train: fed from local records / in memory",
     found(r"training input \(local records\) / in-memory step rate: ([\d.]+)", "train"), ">= 0.9"),
    ("train: streamed from the emulator / in memory",
     found(r"training input \(emulator, streamed\) / in-memory step rate: ([\d.]+)", "train"),
     ">= 0.9 (emulator: Python server)"),
]  # fmt: skip
if cpu_mode:
    print("\nSUMMARY (DEVICE_CHECK_CPU=1: tiny sizes on the CPU; checks the script, not a result)")
else:
    print("\nSUMMARY")
print("| measure | value | target | verdict |\n|---|---:|---|---|")
for name, value, target in rows:
    shown = verdict(value, float(re.search(r"[\d.]+", target).group())) if target else ""
    print(f"| {name} | {value} | {target} | {shown} |")
PYTHON

{
    echo
    echo "| step | status |"
    echo "|---|---|"
    for name in "${order[@]}"; do
        echo "| $name | ${status[$name]:-not run} |"
    done
    echo
    echo "output: $out (device_check.log, summary.txt, steps/, gpu_util.csv on a GPU)"
} | tee -a "$out/summary.txt" | tee -a "$log"

for name in "${order[@]}"; do
    [[ ${status[$name]:-} == ok* || ${status[$name]:-} == skipped* ]] || exit 1
done
exit 0
