"""Which videos a run reads: `--input` resolved, matched and grouped by id, on the launcher.

Matching here, before any Beam job starts, lets a run count its inputs up front (progress
totals, "no videos matched" before a PCA pass) and account for every path it met: a dangling
link or an unreadable folder is a failure, a file with another extension a skipped count.
Used by extract_features and tag_videos alike. No Beam import.
"""

import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field

from features import storage, video_ids
from features.cli import UsageError
from pipelines.elements import Failure

UNREADABLE = "unreadable"
DUPLICATE_ID = "duplicate_id"


@dataclass(frozen=True)
class ResolvedInput:
    """--input as a match: a folder to walk or a glob / single file, and the id root."""

    given: str  # absolute
    pattern: str
    is_folder: bool
    id_root: str


@dataclass
class FoundInputs:
    """Every path the matcher met: unique videos by id, failures, other extensions."""

    videos: list[tuple[str, str]] = field(default_factory=list)  # (id, path), sorted by id
    failures: list[Failure] = field(default_factory=list)  # unreadable, duplicate_id
    skipped_extension: dict[str, int] = field(default_factory=dict)

    @property
    def seen(self) -> int:
        return len(self.videos) + len(self.failures)


def resolve_input(input_arg: str, id_root_arg: str = "") -> ResolvedInput:
    """An existing path is taken literally (a folder named `clips[1]` is a folder); only a
    path that does not exist is read as a glob."""
    given = storage.absolute(input_arg)
    storage.check_bucket(given, "--input")
    if storage.exists(given) and storage.is_dir(given):
        pattern, is_folder, id_root = given.rstrip("/"), True, given.rstrip("/")
    elif storage.exists(given):
        pattern, is_folder, id_root = given, False, posixpath.dirname(given)
    elif video_ids.has_wildcard(given):
        pattern, is_folder, id_root = given, False, video_ids.id_root_of(given)
    else:
        raise UsageError("no such file or folder", f"--input {input_arg}", "check the path")
    if id_root_arg:
        id_root = storage.absolute(id_root_arg).rstrip("/")
    return ResolvedInput(given, pattern, is_folder, id_root)


def find_inputs(resolved: ResolvedInput) -> FoundInputs:
    """Matches --input and keys each path by its id; the first path in sorted order keeps an
    id that two files share (`a.mkv`, `a.mp4`), the others fail as duplicate_id."""
    found = FoundInputs()
    by_id: dict[str, list[str]] = {}
    skipped: Counter[str] = Counter()
    for path, error in _matched(resolved):
        if resolved.is_folder and not video_ids.is_video_file(path) and not _is_folder(path):
            skipped[posixpath.splitext(path)[1].lower()] += 1
            continue
        video_id = video_ids.video_id_from_path(path, resolved.id_root)
        if error:
            found.failures.append(Failure(path, video_id, UNREADABLE, error))
        else:
            by_id.setdefault(video_id, []).append(path)
    for video_id in sorted(by_id):
        first, *others = sorted(by_id[video_id])
        found.videos.append((video_id, first))
        for path in others:
            found.failures.append(Failure(path, video_id, DUPLICATE_ID, f"{first} has the same id"))
    found.skipped_extension = dict(sorted(skipped.items()))
    return found


def _matched(resolved: ResolvedInput):  # -> Iterator[tuple[str, str]]
    if resolved.is_folder:
        yield from storage.walk_files(resolved.pattern)
        return
    for path in storage.match(resolved.pattern):
        # A dangling link matches by name; reading it would fail later with less context.
        yield path, "" if storage.exists(path) else "No such file or directory (dangling link)"


def _is_folder(path: str) -> bool:
    """walk_files reports an unreadable folder by its path: a failure, not an extension."""
    return not storage.is_remote(path) and os.path.isdir(path)


def no_videos_error(resolved: ResolvedInput, found: FoundInputs) -> UsageError:
    """The one line for an input that holds nothing to extract, before any PCA pass."""
    others = sum(found.skipped_extension.values())
    detail = f" ({others} file(s) with other extensions)" if others else ""
    return UsageError(
        f"no videos matched{detail}",
        f"--input {resolved.given}",
        f"point it at a folder or glob of videos ({', '.join(sorted(video_ids.VIDEO_EXTENSIONS))})",
    )
