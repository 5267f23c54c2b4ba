"""The training checkpoint `--resume` continues from: whole after every epoch, or ignored.

Keras's BackupAndRestore writes `training_metadata.json` in place, so a Ctrl-C at the wrong
moment leaves it empty and the next `--resume` crashes. Here each epoch's checkpoint is a
folder of its own, `<output>/checkpoint/epoch-0003/`, holding the weights with the
optimizer's state (`state.weights.h5`, written atomically through features.storage) and then
`state.json`, written last, that records the epoch and the weights file's size and SHA-256.
A checkpoint counts only when its `state.json` reads back and the weights match it, so an
interrupted or damaged write is skipped and the previous epoch's checkpoint is used; the two
newest checkpoints are kept for that. Local folders and gs:// alike.
"""

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass

import keras

from features import storage
from features.cli import UsageError

CHECKPOINT_DIR = "checkpoint"
_WEIGHTS_FILE = "state.weights.h5"
_STATE_FILE = "state.json"
_KEEP = 2
_EPOCH_FOLDER = re.compile(r"epoch-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: the epochs trained so far and where it lies."""

    epochs_done: int
    folder: str


def checkpoint_dir(output: str) -> str:
    return storage.join(output, CHECKPOINT_DIR)


def find_checkpoints(output: str) -> list[str]:
    """Epoch folders under `<output>/checkpoint`, newest first, complete or not."""
    pattern = storage.join(checkpoint_dir(output), "epoch-*", "*")
    folders = {path.rsplit("/", 1)[0] for path in storage.match(pattern)}
    numbered = [(int(m.group(1)), f) for f in folders if (m := _EPOCH_FOLDER.search(f))]
    return [folder for _, folder in sorted(numbered, reverse=True)]


def latest_checkpoint(output: str) -> tuple[Checkpoint | None, list[str]]:
    """The newest complete checkpoint, and a note for each newer one that was not."""
    skipped = []
    for folder in find_checkpoints(output):
        problem = _problem(folder)
        if not problem:
            state = json.loads(storage.read_text(storage.join(folder, _STATE_FILE)))
            return Checkpoint(int(state["epochs_done"]), folder), skipped
        skipped.append(f"{folder}: {problem}; using an older checkpoint")
    return None, skipped


def _problem(folder: str) -> str:
    """Why the checkpoint in `folder` cannot be used, or "" when it can."""
    try:
        state = json.loads(storage.read_text(storage.join(folder, _STATE_FILE)))
        weights = storage.read_bytes(storage.join(folder, _WEIGHTS_FILE))
        epochs_done, size, digest = state["epochs_done"], state["size"], state["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"incomplete ({type(error).__name__}: {error})"
    if len(weights) != size or hashlib.sha256(weights).hexdigest() != digest:
        return "damaged (its weights do not match state.json)"
    if not isinstance(epochs_done, int) or epochs_done < 1:
        return f"damaged (epochs_done={epochs_done!r})"
    return ""


def restore(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Loads weights and optimizer state into a compiled model; UsageError when the
    checkpoint was written by a model of another shape (the rerun changed its flags)."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its variables must exist to load
    path = storage.stage_file(storage.join(checkpoint.folder, _WEIGHTS_FILE))
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as error:
        first_line = (str(error) or type(error).__name__).splitlines()[0]
        raise UsageError(
            f"the checkpoint does not fit this model ({first_line})",
            f"--resume {checkpoint.folder}",
            "rerun with the interrupted run's flags, or pass --overwrite to start over",
        ) from None


def delete_checkpoints(output: str) -> None:
    """Removes every checkpoint (a finished run, or --overwrite)."""
    for folder in find_checkpoints(output):
        _delete_folder(folder)
    if not storage.is_remote(output) and os.path.isdir(checkpoint_dir(output)):
        shutil.rmtree(checkpoint_dir(output), ignore_errors=True)


def _delete_folder(folder: str) -> None:
    for path in storage.match(storage.join(folder, "*")):
        storage.delete(path)
    if not storage.is_remote(folder):
        shutil.rmtree(folder, ignore_errors=True)  # gs:// has no folders to remove


class TrainingCheckpoint(keras.callbacks.Callback):
    """Writes a checkpoint at the end of every epoch and keeps the two newest."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self._output = output

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        folder = storage.join(checkpoint_dir(self._output), f"epoch-{epoch + 1:04d}")
        weights_path = storage.join(folder, _WEIGHTS_FILE)
        with storage.local_output(weights_path) as local:
            self.model.save_weights(local)
            with open(local, "rb") as written:
                weights = written.read()
        state = {
            "epochs_done": epoch + 1,
            "size": len(weights),
            "sha256": hashlib.sha256(weights).hexdigest(),
        }
        storage.write_text(storage.join(folder, _STATE_FILE), json.dumps(state) + "\n")
        for old in find_checkpoints(self._output)[_KEEP:]:
            _delete_folder(old)
