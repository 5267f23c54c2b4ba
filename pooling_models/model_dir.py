"""The model directory `train_pool` writes and `eval_pool` / `tag_videos` read.

<dir>/model.keras        keras.saving.load_model after `import pooling_models`
<dir>/train_config.json  ModelConfig, max_frames, data, whether raw videos can be tagged
<dir>/metrics.json       gap, hit_at_1, hit_at_5, perr, map, num_videos (eval set)
<dir>/manifest.json      the features' manifest, with the files it references:
<dir>/pca.npz, <dir>/vocabulary.csv
"""

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import keras

from features.formats import MANIFEST_FILE, PCA_FILE, VOCABULARY_FILE
from features.video_ids import id_root_of
from pooling_models import staging
from pooling_models.builder import ModelConfig

MODEL_FILE = "model.keras"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
NO_MANIFEST_NOTE = (
    "trained on features without a manifest.json (e.g. the official YouTube-8M files): "
    "the backbone, PCA and frame rate are unknown, so this model can tag extracted "
    "records only, not raw videos"
)


class ModelDirError(ValueError):
    """A model directory or feature folder that breaks the contract; the message names it."""


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


def find_manifest(data_pattern: str, max_levels: int = 3) -> str | None:
    """The manifest.json in the data's folder or one of its parents (`out/frame/*` → `out`).

    For gs:// data the manifest and the files it references are downloaded, and the local
    copy's path is returned."""
    if staging.is_gcs(data_pattern):
        return _find_remote_manifest(data_pattern, max_levels)
    folder = id_root_of(data_pattern) if not os.path.isdir(data_pattern) else data_pattern
    folder = os.path.abspath(folder)
    for _ in range(max_levels + 1):
        candidate = os.path.join(folder, MANIFEST_FILE)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return None


def _find_remote_manifest(data_pattern: str, max_levels: int) -> str | None:
    folder = id_root_of(data_pattern).rstrip("/")
    for _ in range(max_levels + 1):
        if staging.exists(f"{folder}/{MANIFEST_FILE}"):
            local_dir = tempfile.mkdtemp(prefix="framevlad-manifest-")
            local = os.path.join(local_dir, MANIFEST_FILE)
            staging.download(f"{folder}/{MANIFEST_FILE}", local)
            for name in referenced_files(read_manifest_dict(local)):
                if staging.exists(f"{folder}/{name}"):
                    staging.download(f"{folder}/{name}", os.path.join(local_dir, name))
            return local
        if folder.count("/") <= 2:  # gs://bucket
            break
        folder = folder.rsplit("/", 1)[0]
    return None


def read_manifest_dict(path: str) -> dict:
    with open(path) as manifest_file:
        return json.load(manifest_file)


def referenced_files(manifest: dict) -> list[str]:
    """Files beside a manifest that rebuilding its features needs."""
    files = [manifest.get("pca", {}).get("file") or PCA_FILE]
    if manifest.get("vocabulary_file"):
        files.append(manifest["vocabulary_file"])
    return files


def copy_feature_files(manifest_path: str, model_dir: str) -> dict:
    """Copies the manifest and every file it references into the model dir; returns it."""
    manifest = read_manifest_dict(manifest_path)
    source_dir = os.path.dirname(manifest_path)
    for name in referenced_files(manifest):
        source = os.path.join(source_dir, name)
        if not os.path.isfile(source):
            raise ModelDirError(f"{manifest_path} references {name}, but {source} is missing")
        shutil.copyfile(source, os.path.join(model_dir, name))
    shutil.copyfile(manifest_path, os.path.join(model_dir, MANIFEST_FILE))
    return manifest


def vocabulary_text(manifest_path: str | None) -> str:
    """The vocabulary.csv beside a manifest, or "" when it has none."""
    if manifest_path is None:
        return ""
    manifest = read_manifest_dict(manifest_path)
    name = manifest.get("vocabulary_file") or ""
    path = os.path.join(os.path.dirname(manifest_path), name or VOCABULARY_FILE)
    if not name or not os.path.isfile(path):
        return ""
    with open(path) as vocabulary_file:
        return vocabulary_file.read()


def write_json(path: str, value: dict) -> None:
    with open(path, "w") as out:
        json.dump(value, out, indent=2, sort_keys=True)
        out.write("\n")


def read_train_config(model_dir: str) -> TrainConfig:
    path = os.path.join(model_dir, TRAIN_CONFIG_FILE)
    if not os.path.isfile(os.path.join(model_dir, MODEL_FILE)) or not os.path.isfile(path):
        raise ModelDirError(
            f"--model {model_dir}: not a train_pool model directory "
            f"(needs {MODEL_FILE} and {TRAIN_CONFIG_FILE})"
        )
    with open(path) as config_file:
        return TrainConfig.from_json(config_file.read())


def load_model(model_dir: str) -> keras.Model:
    """Loads `<dir>/model.keras`; importing the builder registered framevlad's layers."""
    return keras.saving.load_model(os.path.join(model_dir, MODEL_FILE))
