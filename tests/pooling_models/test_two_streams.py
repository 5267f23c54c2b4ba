"""rgb + audio in train_pool / eval_pool: the manifest's streams as the default features, and
YouTube-8M's official records (rgb 1024 + audio 128 bytes per second, no manifest).

Records are written here with the record encoders, so the tests need no extraction. Labels
follow the audio rows only; the rgb rows are noise, so a model that learns at all uses audio.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from features import manifest, records
from features.formats import AUDIO_KEY, MANIFEST_FILE, RGB_KEY
from framevlad_proto import framevlad_pb2
from pooling_models import eval_pool, model_dir, train_pool

NUM_CLASSES = 3
FRAMES = 6


def write_records(folder, videos: int, seed: int, sizes: dict[str, int]) -> None:
    """Frame-level records in folder/frame, video-level in folder/video; class k's audio
    rows sit around level 48 + 80 k, everything else is noise."""
    rng = np.random.default_rng(seed)
    frame_rows, video_rows = [], []
    for number in range(videos):
        label = number % NUM_CLASSES
        video_id = f"v{seed}_{number:03d}"
        features = {
            name: rng.integers(0, 256, (FRAMES, size)).astype(np.uint8)
            for name, size in sizes.items()
        }
        level = 48 + 80 * label
        features[AUDIO_KEY] = np.clip(
            rng.normal(level, 8, (FRAMES, sizes[AUDIO_KEY])), 0, 255
        ).astype(np.uint8)
        frame_rows.append(records.encode_frame_example(video_id, [label], features))
        means = {f"mean_{name}": frames.mean(0) / 64 - 2 for name, frames in features.items()}
        video_rows.append(records.encode_video_example(video_id, [label], means))
    for level, rows in (("frame", frame_rows), ("video", video_rows)):
        (folder / level).mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / level / "part-00000.tfrecord")) as writer:
            for row in rows:
                writer.write(row)


def two_stream_manifest(sizes: dict[str, int]) -> framevlad_pb2.Manifest:
    """What extract_features writes for --streams rgb,audio (the fields train_pool reads)."""
    features = framevlad_pb2.Manifest(format_version=2, fps=1.0, num_classes=NUM_CLASSES)
    for name, backbone, weights, pca in (
        (RGB_KEY, "tiny", "random", "pca.npz"),
        (AUDIO_KEY, "vggish", "random", "audio_pca.npz"),
    ):
        stream = features.streams.add(name=name, backbone=backbone, dims=sizes[name])
        stream.weights.kind = weights
        stream.frame_height, stream.frame_width = (32, 32) if name == RGB_KEY else (96, 64)
        stream.pca.file, stream.pca.output_dims = pca, sizes[name]
        features.feature_sizes[name] = sizes[name]
    return features


def train_args(data, output, *extra: str) -> list[str]:
    return [
        "--train_data", str(data), "--output", str(output), "--cluster_size", "4",
        "--hidden_size", "16", "--batch_size", "8", "--learning_rate", "1e-2",
        "--epochs", "10", "--patience", "10", "--eval_fraction", "0.3", *extra,
    ]  # fmt: skip


def model_features(output) -> tuple[list[str], list[int]]:
    config = json.loads((output / model_dir.TRAIN_CONFIG_FILE).read_text())["model"]
    return config["feature_names"], config["feature_sizes"]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Records of both streams (rgb 24, audio 8 dims) with the manifest extraction writes."""
    sizes = {RGB_KEY: 24, AUDIO_KEY: 8}
    folder = tmp_path_factory.mktemp("extracted")
    write_records(folder, 60, 0, sizes)
    manifest.write_manifest(str(folder / MANIFEST_FILE), two_stream_manifest(sizes))
    for name in ("pca.npz", "audio_pca.npz"):
        (folder / name).write_bytes(b"not read by train_pool")
    return folder


def test_the_manifest_streams_are_the_default_features(extracted, tmp_path):
    output = tmp_path / "model"
    assert train_pool.main(train_args(extracted / "frame/*.tfrecord", output)) == 0
    assert model_features(output) == (["rgb", "audio"], [24, 8])
    model = model_dir.load_model(str(output))
    # Audio pools with half of rgb's clusters, as WILLOW.
    assert model.get_layer("rgb_netvlad").cluster_size == 4
    assert model.get_layer("audio_netvlad").cluster_size == 2
    assert (output / "audio_pca.npz").is_file()  # the model directory can rebuild both
    metrics = json.loads((output / model_dir.METRICS_FILE).read_text())
    assert metrics["hit_at_1"] >= 0.9  # labels follow the audio rows only
    # eval_pool reads the streams the model was trained on.
    evaluated = eval_pool.run(
        eval_pool.EvalPoolConfig(str(output), str(extracted / "frame/*.tfrecord"))
    )
    assert evaluated["hit_at_1"] >= 0.9


def test_video_level_defaults_to_both_means(extracted, tmp_path):
    output = tmp_path / "model"
    args = train_args(extracted / "video/*.tfrecord", output, "--data_level", "video")
    assert train_pool.main([*args, "--head", "logistic"]) == 0
    assert model_features(output) == (["mean_rgb", "mean_audio"], [24, 8])


def test_feature_names_still_pick_one_stream(extracted, tmp_path):
    output = tmp_path / "model"
    args = train_args(extracted / "frame/*.tfrecord", output, "--feature_names", "rgb")
    assert train_pool.main([*args, "--epochs", "1"]) == 0
    assert model_features(output) == (["rgb"], [24])


def test_sizes_that_do_not_pair_with_the_streams_are_one_line(extracted, tmp_path, capsys):
    args = train_args(extracted / "frame/*.tfrecord", tmp_path, "--feature_sizes", "24")
    assert train_pool.main(args) == 2
    error = capsys.readouterr().err
    assert "1 sizes for 2 feature names" in error and "--feature_sizes 24" in error


def test_official_youtube8m_records_train_on_rgb_and_audio(tmp_path):
    """No manifest: --feature_names rgb,audio takes YouTube-8M's sizes 1024,128."""
    official = tmp_path / "yt8m"
    write_records(official, 30, 1, {RGB_KEY: 1024, AUDIO_KEY: 128})
    output = tmp_path / "model"
    args = train_args(official / "frame/*.tfrecord", output, "--feature_names", "rgb,audio")
    args += ["--num_classes", str(NUM_CLASSES), "--epochs", "2"]  # the flow, not the learning
    with pytest.warns(UserWarning, match="not raw videos"):
        assert train_pool.main(args) == 0
    assert model_features(output) == (["rgb", "audio"], [1024, 128])
    assert not (output / MANIFEST_FILE).exists()
    held_out = tmp_path / "held_out"
    write_records(held_out, 12, 2, {RGB_KEY: 1024, AUDIO_KEY: 128})
    config = eval_pool.EvalPoolConfig(str(output), str(held_out / "frame/*.tfrecord"))
    assert eval_pool.run(config)["num_videos"] == 12

    video_output = tmp_path / "video_model"
    names = ["--feature_names", "mean_rgb,mean_audio", "--data_level", "video"]
    args = train_args(official / "video/*.tfrecord", video_output, *names, "--epochs", "2")
    with pytest.warns(UserWarning, match="not raw videos"):
        assert train_pool.main(args) == 0
    assert model_features(video_output) == (["mean_rgb", "mean_audio"], [1024, 128])
