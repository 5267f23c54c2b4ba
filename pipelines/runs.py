"""Runs into one output: commit markers, the aggregate manifest, resuming and clean-up.

Each run names its shards with its run id and writes `<output>/manifests/<run_id>.json`
last: a run without that file never happened, and the next run sets its shards aside under
`<output>/uncommitted/<run_id>/`. `manifest.json` aggregates the committed runs.
"""

import contextlib
import glob
import json
import os
import re
import shutil

from features import lease, storage, video_ids
from features.formats import FAILED_PREFIX, FRAME_DIR, MANIFEST_FILE, VIDEO_DIR, VOCABULARY_FILE
from features.labels import Vocabulary
from features.manifest import manifest_to_json, read_manifest
from framevlad_proto import framevlad_pb2

MANIFESTS_DIR = "manifests"
UNCOMMITTED_DIR = "uncommitted"
# Half-written files: Beam's file sinks (older versions of this job) and features.storage.
LEFTOVER_PREFIXES = ("beam-temp-", storage.TEMP_PREFIX)
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def run_manifest_path(output: str, run_id: str) -> str:
    return storage.join(output, MANIFESTS_DIR, f"{run_id}.json")


def committed_runs(output: str) -> list[framevlad_pb2.Manifest]:
    """The committed runs' manifests, oldest first."""
    paths = storage.match(storage.join(output, MANIFESTS_DIR, "*.json"))
    runs = [read_manifest(path) for path in paths if RUN_ID.fullmatch(path.rsplit("/", 1)[1][:-5])]
    return sorted(runs, key=lambda run: run.run_id)


def done_ids(output: str, runs: list[framevlad_pb2.Manifest]) -> set[str]:
    """Ids of the videos committed runs wrote: JSON lines (`*.jsonl`), or one id per line in
    the `*.txt` files of older runs."""
    done: set[str] = set()
    for run in runs:
        for relative in run.ok_ids_files:
            text = storage.read_text(storage.join(output, relative))
            done.update(video_ids.read_id_lines(text, legacy=not relative.endswith(".jsonl")))
    return done


def committed_vocabulary(output: str, runs: list[framevlad_pb2.Manifest]) -> Vocabulary | None:
    """The vocabulary the committed records index into (None before the first labelled run)."""
    path = storage.join(output, VOCABULARY_FILE)
    if not runs or not runs[-1].vocabulary_file or not storage.exists(path):
        return None
    return Vocabulary.from_csv(storage.read_text(path), source=path)


def aggregate(runs: list[framevlad_pb2.Manifest]) -> framevlad_pb2.Manifest:
    """The library as the committed runs left it: ok videos and frames summed over runs,
    failures as of the latest run (a video that failed before may have been retried), the
    largest sample-time error of any run; settings (decode, precision) are the latest's."""
    latest = runs[-1]
    combined = framevlad_pb2.Manifest()
    combined.CopyFrom(latest)
    for field in ("frame_records", "video_records", "ok_ids_files"):
        combined.ClearField(field)
    combined.counts.ClearField("skipped")
    summed = ("ok", "frames", "truncated", "unlabeled", "no_audio", "audio_truncated")
    for field in (*summed, "hw_decoded", "hw_decode_fallbacks"):
        setattr(combined.counts, field, sum(getattr(run.counts, field) for run in runs))
    combined.max_sample_error_s = max(run.max_sample_error_s for run in runs)
    combined.counts.seen = combined.counts.ok + combined.counts.failed
    for run in runs:
        combined.frame_records.extend(run.frame_records)
        combined.video_records.extend(run.video_records)
        combined.ok_ids_files.extend(run.ok_ids_files)
    combined.runs.extend(run.run_id for run in runs)
    return combined


def commit(output: str, run: framevlad_pb2.Manifest, vocabulary: Vocabulary) -> None:
    """Writes vocabulary.csv, the run's manifest (the commit marker), then manifest.json,
    each whole or not at all. The vocabulary only ever grows by appending, so writing it
    first is safe: committed records' indices keep their names whether or not this run
    commits."""
    if len(vocabulary):
        storage.write_bytes(storage.join(output, VOCABULARY_FILE), vocabulary.to_csv().encode())
    storage.write_text(run_manifest_path(output, run.run_id), manifest_to_json(run))
    combined = aggregate(committed_runs(output))
    storage.write_text(storage.join(output, MANIFEST_FILE), manifest_to_json(combined))


def release_lease(output: str, run_id: str) -> None:
    """The job gives the output's lease back once it committed, so that a launcher that
    returned after submitting (a Flex Template) leaves no lease behind; a lease that names
    another run (broken and retaken meanwhile) is not ours to delete."""
    path = storage.join(output, lease.LEASE_FILE)
    try:
        holder = json.loads(storage.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return
    if isinstance(holder, dict) and holder.get("run_id") == run_id:
        with contextlib.suppress(FileNotFoundError):
            storage.delete(path)


def set_aside_uncommitted(output: str, committed: set[str]) -> list[str]:
    """Moves files of runs that never committed to `uncommitted/<run_id>/`, and deletes
    half-written files; returns what was moved."""
    delete_leftovers(output)
    patterns = [
        storage.join(output, FRAME_DIR, "*"),
        storage.join(output, VIDEO_DIR, "*"),
        storage.join(output, f"{FAILED_PREFIX}-*"),
        storage.join(output, MANIFESTS_DIR, "*-ids-*"),
        storage.join(output, MANIFESTS_DIR, "*-inputs-*"),
    ]
    prefix = output.rstrip("/") + "/"
    moved = []
    for path in (path for pattern in patterns for path in storage.match(pattern)):
        relative = path[len(prefix) :]
        found = RUN_ID.search(relative)
        if found and found.group() not in committed:
            storage.rename(path, storage.join(output, UNCOMMITTED_DIR, found.group(), relative))
            moved.append(relative)
    return moved


def delete_leftovers(output: str) -> None:
    """A job that died leaves half-written files behind under temporary names."""
    folders = [output, *(storage.join(output, name) for name in (FRAME_DIR, VIDEO_DIR))]
    folders.append(storage.join(output, MANIFESTS_DIR))
    for folder in folders:
        for leftover_prefix in LEFTOVER_PREFIXES:
            pattern = storage.join(folder, f"{leftover_prefix}*")
            if storage.is_remote(output):
                for leftover in storage.match(storage.join(pattern, "**")):
                    storage.delete(leftover)
            else:
                for leftover in glob.glob(glob.escape(folder) + f"/{leftover_prefix}*"):
                    if os.path.isdir(leftover):
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        os.remove(leftover)
