"""Labels for a run's videos, resolved on the launcher against a vocabulary that only grows.

A committed output's `vocabulary.csv` is frozen: its indices are in records already, so a
later run (--skip_existing) appends new names at the end and never renumbers. An explicit
--vocabulary is taken as is; a name not in it fails that video as `unknown_label`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from features import labels, video_ids
from features.cli import UsageError
from features.labels import LabelError, Vocabulary
from pipelines.elements import Failure, VideoInput

UNKNOWN_LABEL = "unknown_label"


@dataclass
class LabeledVideos:
    videos: list[VideoInput] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # unknown_label
    vocabulary: Vocabulary = field(default_factory=lambda: Vocabulary(()))
    labels_without_video: int = 0  # --labels rows whose id matched no input
    conflicting_label_rows: int = 0  # ids whose --labels rows disagree


def choose_vocabulary(
    names: list[str], given: Vocabulary | None, committed: Vocabulary | None, output: str
) -> Vocabulary:
    """The vocabulary of this run: the given one, or the committed one extended by the new
    names (sorted, at the end), or the sorted names of a first run."""
    if given is not None:
        if committed is not None and given.names[: len(committed)] != committed.names:
            raise UsageError(
                "--vocabulary would renumber the classes of the committed records",
                f"{output}/vocabulary.csv",
                "pass a vocabulary that starts with the committed one, or use a new --output",
            )
        return given
    if committed is not None:
        return committed.extended(names)
    return Vocabulary.from_names(names)


def label_videos(
    todo: list[tuple[str, str]],
    found_ids: set[str],
    table: labels.LabelTable | None,
    from_folders: bool,
    vocabulary_for: Callable[[list[str]], Vocabulary],
) -> LabeledVideos:
    """(id, path) pairs -> VideoInputs with label indices.

    `table` holds the --labels rows (None without --labels); `vocabulary_for(names)` turns
    the label names met into the run's vocabulary (see choose_vocabulary)."""
    result = LabeledVideos()
    if table is not None:
        rows = table.rows
        result.labels_without_video = sum(video_id not in found_ids for video_id in rows)
        result.conflicting_label_rows = table.conflicting
    elif from_folders:
        rows = {video_id: [video_ids.folder_label(path)] for video_id, path in todo}
    else:
        rows = {}
    names = sorted({token for tokens in rows.values() for token in tokens if not token.isdigit()})
    result.vocabulary = vocabulary_for(names)
    for video_id, path in todo:
        tokens = rows.get(video_id)
        try:
            indices = tuple(result.vocabulary.indices(tokens or []))
        except LabelError as error:
            result.failures.append(Failure(path, video_id, UNKNOWN_LABEL, str(error)))
            continue
        result.videos.append(VideoInput(video_id, path, indices, labeled=tokens is not None))
    return result
