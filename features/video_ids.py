"""Video ids: the path of a video relative to the library root, without its extension."""

import json
import posixpath
import re

_WILDCARD = re.compile(r"[*?\[]")

# Container extensions matched when --input names a folder (a glob matches what it says).
VIDEO_EXTENSIONS = frozenset(
    [
        ".3gp",
        ".avi",
        ".flv",
        ".h264",
        ".m2ts",
        ".m4v",
        ".mkv",
        ".mov",
        ".mp4",
        ".mpeg",
        ".mpg",
        ".mts",
        ".ogv",
        ".ts",
        ".webm",
        ".wmv",
    ]
)


def has_wildcard(pattern: str) -> bool:
    return bool(_WILDCARD.search(pattern))


def id_root_of(pattern: str) -> str:
    """The non-wildcard folder prefix of a path or glob: `/v/**/*.mp4` -> `/v`."""
    if not has_wildcard(pattern):
        return pattern.rstrip("/")
    prefix = pattern[: _WILDCARD.search(pattern).start()]
    return prefix.rstrip("/") if prefix.endswith("/") else posixpath.dirname(prefix)


def video_id_from_path(path: str, id_root: str) -> str:
    """`/lib/cats/a.mp4` under `/lib` -> `cats/a`.

    Raises ValueError when the path is not under the root, since ids must be stable.
    """
    root = id_root.rstrip("/") + "/"
    if not path.startswith(root):
        raise ValueError(f"{path} is not under the id root {id_root}")
    relative = path[len(root) :]
    stem, _ = posixpath.splitext(relative)
    return stem


def is_video_file(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def folder_label(path: str) -> str:
    """UCF101 layout: the parent folder names the class."""
    return posixpath.basename(posixpath.dirname(path))


def encode_id_line(video_id: str) -> str:
    """One line of a done-ids file (no line end): the id as a JSON string, ASCII only.

    Ids are paths and may hold newlines, tabs, quotes or (surrogate-escaped) bytes that are
    not UTF-8; JSON escapes every one of them, so a line is always exactly one id."""
    return json.dumps(video_id, ensure_ascii=True)


def read_id_lines(text: str, legacy: bool = False) -> list[str]:
    """The ids of a done-ids file: JSON lines (`*.jsonl`), or with `legacy` the `*.txt`
    files of older runs, one raw id per line (as they were read then)."""
    if legacy:
        return [line for line in text.split("\n") if line]
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            video_id = json.loads(line)
        except ValueError:
            video_id = None
        if not isinstance(video_id, str):
            raise ValueError(f"line {number} is not a JSON string: {line[:80]!r}")
        ids.append(video_id)
    return ids
