"""Runs into one output: commit markers, the aggregate manifest, resuming and clean-up.

Each run names its shards with its run id and writes `<output>/manifests/<run_id>.json`
last: a run without that file never happened, and the next run sets its shards aside under
`<output>/uncommitted/<run_id>/`. `manifest.json` aggregates the committed runs.
"""

import glob
import os
import re
import shutil

from apache_beam.io.filesystems import FileSystems

from features.formats import FAILED_PREFIX, FRAME_DIR, MANIFEST_FILE, VIDEO_DIR
from framevlad_proto import framevlad_pb2
from pipelines import manifest, storage

MANIFESTS_DIR = "manifests"
UNCOMMITTED_DIR = "uncommitted"
BEAM_TEMP = "beam-temp-"
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def run_manifest_path(output: str, run_id: str) -> str:
    return storage.join(output, MANIFESTS_DIR, f"{run_id}.json")


def committed_runs(output: str) -> list[framevlad_pb2.Manifest]:
    """The committed runs' manifests, oldest first."""
    paths = storage.match(storage.join(output, MANIFESTS_DIR, "*.json"))
    runs = [manifest.read_manifest(path) for path in paths]
    return sorted(runs, key=lambda run: run.run_id)


def aggregate(runs: list[framevlad_pb2.Manifest]) -> framevlad_pb2.Manifest:
    """The library as the committed runs left it: ok videos and frames summed over runs,
    failures as of the latest run (a video that failed before may have been retried)."""
    latest = runs[-1]
    combined = framevlad_pb2.Manifest()
    combined.CopyFrom(latest)
    combined.ClearField("frame_records")
    combined.ClearField("video_records")
    combined.ClearField("ok_ids_files")
    combined.counts.ClearField("skipped")
    for field in ("ok", "frames", "truncated", "unlabeled"):
        setattr(combined.counts, field, sum(getattr(run.counts, field) for run in runs))
    combined.counts.seen = combined.counts.ok + combined.counts.failed
    for run in runs:
        combined.frame_records.extend(run.frame_records)
        combined.video_records.extend(run.video_records)
        combined.ok_ids_files.extend(run.ok_ids_files)
    combined.runs.extend(run.run_id for run in runs)
    return combined


def commit(output: str, run: framevlad_pb2.Manifest) -> None:
    """Writes the run's manifest (the commit marker), then the aggregate manifest.json."""
    storage.write_bytes(
        run_manifest_path(output, run.run_id), manifest.manifest_to_json(run).encode()
    )
    combined = aggregate(committed_runs(output))
    storage.write_bytes(
        storage.join(output, MANIFEST_FILE), manifest.manifest_to_json(combined).encode()
    )


def set_aside_uncommitted(output: str, committed: set[str]) -> list[str]:
    """Moves shards of runs that never committed to `uncommitted/<run_id>/`, and deletes the
    temporary folders of writes that never finished; returns what was moved."""
    delete_unfinished_writes(output)
    patterns = [
        storage.join(output, FRAME_DIR, "*"),
        storage.join(output, VIDEO_DIR, "*"),
        storage.join(output, f"{FAILED_PREFIX}-*"),
        storage.join(output, MANIFESTS_DIR, "*-ids-*"),
    ]
    prefix = output.rstrip("/") + "/"
    moved = []
    for path in (path for pattern in patterns for path in storage.match(pattern)):
        relative = path[len(prefix) :]
        found = RUN_ID.search(relative)
        if found and found.group() not in committed:
            target = storage.join(output, UNCOMMITTED_DIR, found.group(), relative)
            if not storage.is_remote(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
            FileSystems.rename([path], [target])
            moved.append(relative)
    return moved


def delete_unfinished_writes(output: str) -> None:
    """Beam's file sinks write into `beam-temp-*` folders and rename at the end; a job that
    died leaves them behind."""
    folders = [
        output,
        *(storage.join(output, name) for name in (FRAME_DIR, VIDEO_DIR, MANIFESTS_DIR)),
    ]
    for folder in folders:
        pattern = storage.join(folder, f"{BEAM_TEMP}*")
        if storage.is_remote(output):
            leftovers = storage.match(storage.join(pattern, "**"))
            if leftovers:
                FileSystems.delete(leftovers)
        else:
            for leftover in glob.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
