"""What tag_videos leaves in --output, and how it gets there whole.

The job writes into `<output>/.tagging-<run_id>/`; only after it finished (and the report
was built from that folder) are the files moved into place, `tagging.json` last. A run that
dies leaves its staging folder, never a half set of outputs, and the next run deletes it.
An output holding an earlier run's files is refused unless `--overwrite`, which deletes
those files first, so a report never shows another run's failures or thumbnails.
"""

import csv
import fnmatch
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow
import pyarrow.parquet

from features import storage
from features.cli import UsageError
from pipelines.report import REPORT_DIR

SUMMARY_FILE = "tagging.json"
STAGING_PREFIX = ".tagging-"
TAG_SCHEMA = pyarrow.schema(
    [
        ("id", pyarrow.string()),
        ("path", pyarrow.string()),
        ("rank", pyarrow.int32()),
        ("label_index", pyarrow.int32()),
        ("label_name", pyarrow.string()),
        ("score", pyarrow.float32()),
    ]
)
SEGMENT_SCHEMA = pyarrow.schema(
    [
        ("id", pyarrow.string()),
        ("start_s", pyarrow.float64()),
        ("end_s", pyarrow.float64()),
        ("label_index", pyarrow.int32()),
        ("label_name", pyarrow.string()),
        ("score", pyarrow.float32()),
    ]
)
PREDICTIONS_HEADER = ("VideoId", "LabelConfidencePairs")  # Kaggle's YouTube-8M format
# Every name tag_videos writes under --output (relative, fnmatch patterns; `*` crosses `/`).
OWN_FILES = (
    "tags.parquet",
    "tags.csv",
    "segments.parquet",
    "predictions.csv",
    SUMMARY_FILE,
    "failed-*.jsonl",
    f"{REPORT_DIR}/*",
    f"{STAGING_PREFIX}*",
    "beam-temp-*",  # Beam sinks of a run that died (tag_videos before per-run staging)
)


def staging_dir(output: str, run_id: str) -> str:
    return storage.join(output, f"{STAGING_PREFIX}{run_id}")


def score_text(score: float) -> str:
    """The shortest text that reads back as the same float32: distinct scores stay distinct
    (a fixed `%.6f` turns 4.9e-7 and 3.2e-7 into one tie) and nothing is made up."""
    return str(np.float32(score))


def short_float(score: float) -> float:
    """A float whose repr is score_text(score), for the csv module to write as a number."""
    return float(score_text(score))


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence]) -> bytes:
    """A CSV file with `\\n` line ends; every text field quoted, so an id holding a newline,
    carriage return, comma or quote reads back as one field (numbers stay bare)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(header)
    csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    return text.getvalue().encode("utf-8")


def parquet_bytes(rows: list[dict], schema: pyarrow.Schema) -> bytes:
    sink = io.BytesIO()
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows, schema=schema), sink)
    return sink.getvalue()


def write_tags(rows: list[dict], folder: str) -> None:
    """tags.parquet and tags.csv, each written whole; rows by id, then rank."""
    rows = sorted(rows, key=lambda row: (row["id"], row["rank"]))
    storage.write_bytes(storage.join(folder, "tags.parquet"), parquet_bytes(rows, TAG_SCHEMA))
    names = TAG_SCHEMA.names
    lines = (
        [short_float(row[name]) if name == "score" else row[name] for name in names] for row in rows
    )
    storage.write_bytes(storage.join(folder, "tags.csv"), csv_bytes(names, lines))


def write_segments(rows: list[dict], folder: str) -> None:
    rows = sorted(rows, key=lambda row: (row["id"], row["start_s"], -row["score"]))
    data = parquet_bytes(rows, SEGMENT_SCHEMA)
    storage.write_bytes(storage.join(folder, "segments.parquet"), data)


def write_predictions(pairs: list[tuple[str, str]], folder: str) -> None:
    """predictions.csv: (video id, "label score label score ...") rows, sorted by id."""
    data = csv_bytes(PREDICTIONS_HEADER, sorted(pairs))
    storage.write_bytes(storage.join(folder, "predictions.csv"), data)


def write_summary(counts: dict, top_scores: list[float], folder: str, summary: dict) -> None:
    counts = {"seen": 0, "tagged": 0, "failed": 0, **counts}
    top_score = short_float(max(top_scores)) if top_scores else None
    body = {**summary, "counts": counts, "top_score": top_score}
    text = json.dumps(body, indent=2, sort_keys=True) + "\n"
    storage.write_text(storage.join(folder, SUMMARY_FILE), text)


def is_own(relative: str) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in OWN_FILES)


def prepare_output(output: str, overwrite: bool, keep: Sequence[str] = ()) -> None:
    """Leaves `output` free of earlier runs' files, or refuses it with a one-line reason.

    Staging folders of runs that died are deleted always (the caller holds the output's
    lease, so no live run owns them), and so are outputs without a tagging.json (a commit
    that was cut short: no run is complete there); a committed run's outputs only with
    `overwrite`. Files tag_videos did not write are never deleted. `keep` names files to
    leave (the lease)."""
    if not storage.is_remote(output) and os.path.isfile(output):
        raise UsageError("is a file", f"--output {output}", "name a folder")
    if not storage.exists(output):
        return
    prefix = output.rstrip("/") + "/"
    files = [path for path, _ in storage.walk_files(output) if path[len(prefix) :] not in keep]
    stale = [path for path in files if path[len(prefix) :].startswith(STAGING_PREFIX)]
    remove_files(stale, output)
    files = [path for path in files if path not in stale]
    if not files:
        return
    foreign = [path for path in files if not is_own(path[len(prefix) :])]
    if foreign:
        raise UsageError(
            f"holds {len(foreign)} file(s) tag_videos did not write, e.g. {foreign[0]!r}",
            f"--output {output}",
            "choose an empty or new folder (--overwrite replaces only tag_videos' own files)",
        )
    if not overwrite and any(path[len(prefix) :] == SUMMARY_FILE for path in files):
        raise UsageError(
            f"holds an earlier run's outputs ({len(files)} files)",
            f"--output {output}",
            "pass --overwrite to replace them, or choose a new folder",
        )
    remove_files(files, output)


def remove_files(paths: Sequence[str], root: str) -> None:
    """Deletes files, then (locally) the folders under `root` they leave empty."""
    for path in paths:
        storage.delete(path)
    if storage.is_remote(root):
        return
    for folder in sorted({os.path.dirname(path) for path in paths}, key=len, reverse=True):
        while folder.startswith(root.rstrip("/") + "/") and os.path.isdir(folder):
            if os.listdir(folder):
                break
            os.rmdir(folder)
            folder = os.path.dirname(folder)


def commit(staging: str, output: str) -> None:
    """Moves every staged file into `output`, the report page next and tagging.json last:
    a tagging.json in --output says that every other output beside it is complete."""
    prefix = staging.rstrip("/") + "/"
    staged = [path[len(prefix) :] for path, _ in storage.walk_files(staging)]
    last = [f"{REPORT_DIR}/index.html", SUMMARY_FILE]
    for relative in [name for name in staged if name not in last] + last:
        if relative in staged:
            storage.rename(storage.join(staging, relative), storage.join(output, relative))
    if not storage.is_remote(staging):
        shutil.rmtree(staging, ignore_errors=True)
