"""Tiny inputs for the pooling-model tests, made without extraction or training: frame and
video records written with the record encoders, the manifest extraction would write beside
them, and model directories written straight from a ModelConfig (random weights)."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from features import manifest, records
from features.formats import AUDIO_KEY, MANIFEST_FILE, RGB_KEY
from features.labels import Vocabulary
from framevlad_proto import framevlad_pb2
from pooling_models import model_dir
from pooling_models.builder import build_model
from pooling_models.model_config import ModelConfig

NUM_CLASSES = 3
FRAMES = 6


def write_records(
    folder: Path, videos: int, seed: int, sizes: dict[str, int], frames: int = FRAMES
) -> None:
    """Frame-level records in folder/frame, video-level in folder/video; class k's audio
    rows sit around level 48 + 80 k, everything else is noise. `frames` may be a count or,
    per video, cycles through 1..frames when negative (videos of different lengths)."""
    rng = np.random.default_rng(seed)
    frame_rows, video_rows = [], []
    for number in range(videos):
        label = number % NUM_CLASSES
        video_id = f"v{seed}_{number:03d}"
        length = frames if frames > 0 else 1 + number % -frames
        features = {
            name: rng.integers(0, 256, (length, size)).astype(np.uint8)
            for name, size in sizes.items()
        }
        level = 48 + 80 * label
        features[AUDIO_KEY] = np.clip(
            rng.normal(level, 8, (length, sizes[AUDIO_KEY])), 0, 255
        ).astype(np.uint8)
        frame_rows.append(records.encode_frame_example(video_id, [label], features))
        means = {f"mean_{name}": values.mean(0) / 64 - 2 for name, values in features.items()}
        video_rows.append(records.encode_video_example(video_id, [label], means))
    for level, rows in (("frame", frame_rows), ("video", video_rows)):
        (folder / level).mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / level / "part-00000.tfrecord")) as writer:
            for row in rows:
                writer.write(row)


def two_stream_manifest(sizes: dict[str, int], fps: float = 1.0) -> framevlad_pb2.Manifest:
    """What extract_features writes for --streams rgb,audio (the fields train_pool reads)."""
    features = framevlad_pb2.Manifest(format_version=2, fps=fps, num_classes=NUM_CLASSES)
    for name, backbone, weights, pca in (
        (RGB_KEY, "tiny", "random", "pca.npz"),
        (AUDIO_KEY, "vggish", "random", "audio_pca.npz"),
    ):
        stream = features.streams.add(name=name, backbone=backbone, dims=sizes[name])
        stream.weights.kind = weights
        stream.frame_height, stream.frame_width = (32, 32) if name == RGB_KEY else (96, 64)
        stream.pca.file, stream.pca.output_dims = pca, sizes[name]
        stream.pca.sha256 = f"{name}-pca-sha256"
        features.feature_sizes[name] = sizes[name]
    return features


def write_model_dir(
    folder: Path,
    config: ModelConfig,
    seed: int,
    max_frames: int = 300,
    label_names: tuple[str, ...] = (),
    features: framevlad_pb2.Manifest | None = None,
) -> Path:
    """A model directory as train_pool leaves it, with random weights (seeded): model.keras,
    train_config.json, and vocabulary.csv / manifest.json when given."""
    keras.utils.set_random_seed(seed)
    model = build_model(config)
    folder.mkdir(parents=True, exist_ok=True)
    model_dir.save_model(model, str(folder))
    if label_names:
        (folder / "vocabulary.csv").write_text(Vocabulary(label_names).to_csv())
    if features is not None:
        manifest.write_manifest(str(folder / MANIFEST_FILE), features)
    train_config = model_dir.TrainConfig(
        model=config,
        max_frames=max_frames,
        train_data="synthetic",
        raw_video_tagging=features is not None,
    )
    model_dir.write_train_config(str(folder), train_config)
    return folder
