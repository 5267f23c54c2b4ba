"""The model directory `train_pool` writes and `eval_pool` / `tag_videos` read.

<dir>/model.keras          the Keras model (`load_model` below)
<dir>/train_config.json    ModelConfig, max_frames, data, whether raw videos can be tagged;
                           written last: a folder without it is not a model directory
<dir>/metrics.json         gap, hit_at_1, hit_at_5, perr, map, num_videos (eval set)
<dir>/eval_metrics.json    the same, from the latest `eval_pool` run
<dir>/manifest.json        the features' manifest, with the files it references:
<dir>/pca.npz, <dir>/vocabulary.csv

`<dir>` is a local folder or a gs:// URL; every file is written whole or not at all through
features.storage. Light to import: Keras loads only inside `load_model` / `save_model`.
"""

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from features import manifest, storage
from features.cli import UsageError
from features.formats import MANIFEST_FILE, VOCABULARY_FILE
from features.labels import LabelError, Vocabulary
from framevlad_proto import framevlad_pb2
from pooling_models.model_config import ModelConfig

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
EVAL_METRICS_FILE = "eval_metrics.json"
NO_MANIFEST_NOTE = (
    "trained on features without a manifest.json (e.g. the official YouTube-8M files): "
    "the backbone, PCA and frame rate are unknown, so this model can tag extracted "
    "records only, not raw videos"
)


class ModelDirError(UsageError):
    """A model directory or feature folder that breaks the contract; names the path."""


@dataclass(frozen=True)
class TrainConfig:
    """What a model directory records about how its model was trained."""

    model: ModelConfig
    max_frames: int
    train_data: str
    eval_data: str = ""
    eval_fraction: float = 0.0
    raw_video_tagging: bool = False
    note: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> str:
        as_dict = asdict(self)
        as_dict["model"] = self.model.to_dict()
        return json.dumps(as_dict, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        as_dict = json.loads(text)
        as_dict["model"] = ModelConfig.from_dict(as_dict["model"])
        return cls(**as_dict)


def read_train_config(model_dir: str) -> TrainConfig:
    """The directory's TrainConfig; ModelDirError when it is not a train_pool directory."""
    path = storage.join(model_dir, TRAIN_CONFIG_FILE)
    if not storage.exists(storage.join(model_dir, MODEL_FILE)) or not storage.exists(path):
        raise ModelDirError(
            "not a train_pool model directory",
            f"--model {model_dir}",
            f"pass a folder holding {MODEL_FILE} and {TRAIN_CONFIG_FILE}",
        )
    try:
        return TrainConfig.from_json(storage.read_text(path))
    except (ValueError, KeyError, TypeError) as error:
        first_line = (str(error) or type(error).__name__).splitlines()[0]
        raise ModelDirError(
            f"unreadable {TRAIN_CONFIG_FILE}: {first_line}",
            path,
            "retrain into a fresh --output, or restore the file from a copy",
        ) from None


def label_names(model_dir: str) -> tuple[str, ...]:
    """The class names of `<dir>/vocabulary.csv`, by index; () when the directory has none
    (labels were bare indices)."""
    path = storage.join(model_dir, VOCABULARY_FILE)
    if not storage.exists(path):
        return ()
    try:
        return Vocabulary.from_csv(storage.read_text(path), source=path).names
    except LabelError as error:
        raise ModelDirError(
            f"unreadable {VOCABULARY_FILE}: {error}",
            f"--model {model_dir}",
            "restore it from the features' vocabulary.csv, or retrain",
        ) from None


def load_model(model_dir: str) -> "keras.Model":
    """Loads `<dir>/model.keras` (staged once when remote) with framevlad's layers, for
    inference: uncompiled, so a mixed-precision run's optimizer state is not read."""
    import keras

    import pooling_models.builder  # noqa: F401  (registers the framevlad layers)

    url = storage.join(model_dir, MODEL_FILE)
    try:
        return keras.saving.load_model(storage.stage_file(url), compile=False)
    except (ValueError, zipfile.BadZipFile, KeyError, TypeError) as error:
        first_line = (str(error) or type(error).__name__).splitlines()[0]
        raise ModelDirError(
            f"{MODEL_FILE} cannot be loaded: {first_line}",
            url,
            "retrain into a fresh --output, or restore the file from a copy",
        ) from None


def save_model(model: "keras.Model", model_dir: str) -> None:
    """Writes `<dir>/model.keras` whole (a temp file moved or uploaded once complete)."""
    with storage.local_output(storage.join(model_dir, MODEL_FILE)) as local:
        model.save(local)


def write_json(path: str, value: dict) -> None:
    """Writes a JSON file whole (local path or gs:// URL)."""
    storage.write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_train_config(model_dir: str, train_config: TrainConfig) -> None:
    storage.write_text(storage.join(model_dir, TRAIN_CONFIG_FILE), train_config.to_json())


def _folder(path: str) -> str:
    if storage.is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


def copy_feature_files(
    manifest_path: str, features: framevlad_pb2.Manifest, model_dir: str
) -> None:
    """Copies the manifest and every file it references into the model directory."""
    source_dir = _folder(manifest_path)
    for name in manifest.referenced_files(features):
        source = storage.join(source_dir, name)
        if not storage.exists(source):
            raise ModelDirError(
                f"the manifest references {name}, which is missing",
                manifest_path,
                f"restore {source}, or re-extract the features",
            )
        storage.write_bytes(storage.join(model_dir, name), storage.read_bytes(source))
    manifest.write_manifest(storage.join(model_dir, MANIFEST_FILE), features)


def vocabulary_text(manifest_path: str, features: framevlad_pb2.Manifest) -> str:
    """The vocabulary file beside a manifest, or "" when it names none or it is missing."""
    name = features.vocabulary.file or features.vocabulary_file
    path = storage.join(_folder(manifest_path), name) if name else ""
    return storage.read_text(path) if path and storage.exists(path) else ""
