"""Sample library → extract_features → train_pool → eval_pool, with real records and models."""

import csv
import io
import json
import shutil

import keras
import numpy as np
import pytest

from pooling_models import eval_pool, model_dir, train_pool
from pooling_models.metrics import gap
from tests.extraction import extract, sample_videos

TRAIN_VIDEOS = 48
EVAL_VIDEOS = 16


def extract_library(tmp_path_factory, name: str, videos: int, seed: int, *flags: str):
    library = sample_videos(tmp_path_factory.mktemp(name), videos, seed)
    labels = ["--labels", str(library / "labels.csv")]
    return extract(library, tmp_path_factory.mktemp(f"{name}_features"), *labels, *flags)


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """A training library and an unseen one (another seed) extracted with the first one's PCAs
    and vocabulary; both streams (rgb, audio), as extract_features does by default."""
    train = extract_library(tmp_path_factory, "train", TRAIN_VIDEOS, 0)
    shared = ["--vocabulary", str(train.output / "vocabulary.csv")]
    shared += ["--pca", str(train.output / "pca.npz")]
    shared += ["--audio_pca", str(train.output / "audio_pca.npz")]
    return train, extract_library(tmp_path_factory, "held_out", EVAL_VIDEOS, 1, *shared)


def train_args(train, output, *extra) -> list[str]:
    return [
        "--train_data", str(train.output / "frame/*.tfrecord"), "--output", str(output),
        "--cluster_size", "8", "--hidden_size", "32", "--batch_size", "8",
        "--learning_rate", "1e-2", "--epochs", "25", "--patience", "25", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def netvlad_model(libraries, tmp_path_factory):
    train, held_out = libraries
    output = tmp_path_factory.mktemp("netvlad_model")
    eval_data = str(held_out.output / "frame/*.tfrecord")
    args = train_args(train, output, "--pooling", "netvlad", "--eval_data", eval_data)
    assert train_pool.main(args) == 0
    return output


def test_model_dir_holds_the_contract(netvlad_model, libraries):
    train, _ = libraries
    for name in ("model.keras", "metrics.json", "train_config.json", "manifest.json"):
        assert (netvlad_model / name).is_file(), name
    for name in ("pca.npz", "audio_pca.npz", "vocabulary.csv"):
        assert (netvlad_model / name).read_bytes() == (train.output / name).read_bytes()
    metrics = json.loads((netvlad_model / "metrics.json").read_text())
    assert set(metrics) == {"gap", "hit_at_1", "hit_at_5", "perr", "map", "num_videos"}
    config = json.loads((netvlad_model / "train_config.json").read_text())
    assert config["raw_video_tagging"] is True and config["model"]["pooling"] == "netvlad"
    # The manifest's streams, without --feature_names; audio pools with half the clusters.
    assert config["model"]["feature_names"] == ["rgb", "audio"]
    assert config["model"]["feature_sizes"] == [32, 128]
    # The contract tagging builds on: {"rgb": [B, T, D], "audio": [B, T, 128],
    # "num_frames": [B]} -> [B, C].
    model = model_dir.load_model(str(netvlad_model))
    assert model.get_layer("audio_netvlad").cluster_size == 4
    rng = np.random.default_rng(0)
    inputs = {
        "rgb": rng.normal(size=(2, 13, 32)).astype(np.float32),
        "audio": rng.normal(size=(2, 13, 128)).astype(np.float32),
        "num_frames": np.array([13, 4], np.int32),
    }
    probabilities = np.asarray(model(inputs))
    assert probabilities.shape == (2, 4) and ((probabilities > 0) & (probabilities < 1)).all()


def test_netvlad_beats_chance_on_held_out_videos(netvlad_model, libraries, tmp_path):
    """GAP on an unseen library beats random scores (≈ 0.30 with 4 classes) by ≥ 0.2 (seed 0
    gives 0.62); the two classes that differ only in order cap an orderless model below 1."""
    _, held_out = libraries
    predictions = tmp_path / "predictions.csv"
    data = str(held_out.output / "frame/*.tfrecord")
    args = ["--model", str(netvlad_model), "--eval_data", data, "--predictions", str(predictions)]
    assert eval_pool.main(args) == 0
    metrics = json.loads((netvlad_model / "eval_metrics.json").read_text())
    labels = np.eye(4)[[0, 1, 2, 3] * (EVAL_VIDEOS // 4)]
    scores = [np.random.default_rng(seed).random((EVAL_VIDEOS, 4)) for seed in range(50)]
    chance = np.mean([gap(random_scores, labels) for random_scores in scores])
    assert metrics["num_videos"] == EVAL_VIDEOS
    assert metrics["gap"] >= chance + 0.2, (metrics, chance)
    rows = list(csv.reader(predictions.open()))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == EVAL_VIDEOS + 1
    pairs = rows[1][1].split()
    assert len(pairs) == 8 and sorted(int(label) for label in pairs[::2]) == [0, 1, 2, 3]
    scores = [float(score) for score in pairs[1::2]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("pooling", ["mean", "lstm", "conv", "single_frame"])
def test_other_poolings_train_on_a_hold_out(libraries, tmp_path, pooling):
    train, _ = libraries
    extra = ["--pooling", pooling, "--epochs", "2", "--eval_fraction", "0.3"]
    extra += ["--recurrent_units", "16"]
    assert train_pool.main(train_args(train, tmp_path, *extra)) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_videos"] >= 1 and 0 <= metrics["gap"] <= 1


def test_video_level_logistic(libraries, tmp_path):
    train, held_out = libraries
    extra = ["--data_level", "video", "--head", "logistic", "--epochs", "3"]
    extra += ["--eval_data", str(held_out.output / "video/*.tfrecord")]
    args = train_args(train, tmp_path, *extra)
    args[1] = str(train.output / "video/*.tfrecord")
    assert train_pool.main(args) == 0
    config = json.loads((tmp_path / "train_config.json").read_text())
    assert config["model"]["feature_names"] == ["mean_rgb", "mean_audio"]


def test_data_without_manifest_trains_with_a_warning(libraries, tmp_path):
    train, _ = libraries
    records = tmp_path / "official"
    records.mkdir()
    for path in (train.output / "frame").glob("*.tfrecord"):
        (records / path.name).write_bytes(path.read_bytes())
    args = train_args(train, tmp_path / "model", "--epochs", "1", "--feature_sizes", "32")
    args[1] = str(records / "*.tfrecord")
    with pytest.warns(UserWarning, match="not raw videos"):
        assert train_pool.main(args) == 0
    config = json.loads((tmp_path / "model/train_config.json").read_text())
    assert config["raw_video_tagging"] is False and "raw videos" in config["note"]
    assert not (tmp_path / "model/manifest.json").exists()


def one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if not line.startswith("WARNING: All log")]
    assert "Traceback" not in error and len(lines) == 1, error
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--train_data", "/no/such/*.tfrecord"], "no TFRecord files matched"),
        (["--epochs", "0"], "(--epochs)"),
        (["--learning_rate", "-1"], "(--learning_rate)"),
        (["--learning_rate", "nan"], "(--learning_rate)"),
        (["--batch_size", "0"], "(--batch_size)"),
        (["--eval_fraction", "1"], "--eval_fraction 1"),
        (["--feature_names", "rgb,audio", "--feature_sizes", "32"], "--feature_sizes 32"),
        (["--resume", "--overwrite"], "--resume --overwrite"),
        (["--max-frames", "3"], "did you mean --max_frames"),
    ],
)
def test_bad_flags_fail_fast(libraries, tmp_path, capsys, flags, message):
    train, _ = libraries
    assert train_pool.main(train_args(train, tmp_path, *flags)) == 2
    line = one_error_line(capsys)
    assert line.startswith("train_pool: error: ") and message in line


def test_a_hold_out_without_videos_is_one_line_up_front(libraries, tmp_path, capsys):
    train, _ = libraries
    args = train_args(train, tmp_path, "--eval_fraction", "0.0001")
    assert train_pool.main(args) == 2
    line = one_error_line(capsys)
    assert "the evaluation data holds no videos" in line and f"has {TRAIN_VIDEOS})" in line
    assert "--eval_fraction" in line and "--eval_data" in line
    assert not (tmp_path / "checkpoint").exists()  # nothing trained


def test_truncated_record_is_named_with_its_offset(netvlad_model, libraries, tmp_path, capsys):
    train, _ = libraries
    records = tmp_path / "records"
    records.mkdir()
    source = sorted((train.output / "frame").glob("*.tfrecord"))[0].read_bytes()
    (records / "broken.tfrecord").write_bytes(source[: len(source) // 2])
    args = train_args(train, tmp_path / "model", "--epochs", "1", "--num_classes", "4")
    args[1] = str(records / "*.tfrecord")
    args += ["--feature_sizes", "32", "--eval_data", str(records / "*.tfrecord")]
    assert train_pool.main(args) == 2
    line = one_error_line(capsys)
    assert "broken.tfrecord" in line and "truncated TFRecord file: a record at byte" in line
    assert f"end at byte {len(source) // 2}" in line
    assert not (tmp_path / "model/checkpoint").exists()  # found before any training
    data = str(records / "*.tfrecord")
    assert eval_pool.main(["--model", str(netvlad_model), "--eval_data", data]) == 2
    assert "broken.tfrecord" in one_error_line(capsys)


def test_a_flipped_bit_is_named_by_the_reader(libraries, tmp_path, capsys):
    train, _ = libraries
    records = tmp_path / "records"
    records.mkdir()
    source = bytearray(sorted((train.output / "frame").glob("*.tfrecord"))[0].read_bytes())
    source[len(source) // 2] ^= 0xFF
    (records / "flipped.tfrecord").write_bytes(bytes(source))
    args = train_args(train, tmp_path / "model", "--epochs", "1", "--num_classes", "4")
    args[1] = str(records / "*.tfrecord")
    args += ["--feature_sizes", "32", "--eval_data", str(records / "*.tfrecord")]
    assert train_pool.main(args) == 2
    line = one_error_line(capsys)
    assert "flipped.tfrecord" in line and "records end at byte" in line


def test_video_level_records_for_a_frame_model_are_one_line(
    netvlad_model, libraries, tmp_path, capsys
):
    _, held_out = libraries
    data = str(held_out.output / "video/*.tfrecord")
    assert eval_pool.main(["--model", str(netvlad_model), "--eval_data", data]) == 2
    line = one_error_line(capsys)
    assert "video-level records where frame-level records are needed" in line
    assert f"--eval_data {data}" in line
    train, _ = libraries
    args = train_args(train, tmp_path, "--epochs", "1")
    args[1] = str(train.output / "video/*.tfrecord")
    assert train_pool.main(args) == 2
    assert "frame-level records are needed" in one_error_line(capsys)


def test_eval_pool_old_data_flag_still_works_with_a_warning(netvlad_model, libraries, capsys):
    _, held_out = libraries
    data = str(held_out.output / "frame/*.tfrecord")
    assert eval_pool.main(["--model", str(netvlad_model), "--data", data]) == 0
    assert "--data is deprecated; use --eval_data" in capsys.readouterr().err


class InterruptAfter(keras.callbacks.Callback):
    """Ctrl-C at the end of an epoch, after train_pool's checkpoint of it is written."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self._epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self._epochs:
            raise KeyboardInterrupt


def interrupted_run(train, output, epochs_done: int) -> list[str]:
    args = train_args(train, output, "--epochs", "4", "--eval_fraction", "0.3")
    parsed, _ = train_pool.build_parser().parse(args)
    with pytest.raises(KeyboardInterrupt):
        train_pool.run(train_pool.config_from_args(vars(parsed)), [InterruptAfter(epochs_done)])
    return args


def test_resume_continues_an_interrupted_run(libraries, tmp_path, capsys):
    train, _ = libraries
    args = interrupted_run(train, tmp_path, 2)
    assert not (tmp_path / ".lease.json").exists()  # released on the way out
    assert train_pool.main(args) == 2  # a plain rerun must not discard the checkpoint
    line = one_error_line(capsys)
    assert "checkpoint of an interrupted run" in line and "--resume" in line
    assert train_pool.main([*args, "--resume"]) == 0
    history = json.loads((tmp_path / "train_config.json").read_text())["history"]
    assert len(history["loss"]) == 2  # epochs 3 and 4 only: 1 and 2 came from the checkpoint
    assert not (tmp_path / "checkpoint").exists()  # a finished run keeps no training state
    assert train_pool.main(args) == 2  # a finished model is not replaced silently either
    assert "--overwrite" in one_error_line(capsys)


def test_resume_skips_a_checkpoint_torn_by_the_interrupt(libraries, tmp_path):
    train, _ = libraries
    args = interrupted_run(train, tmp_path, 3)
    newest = tmp_path / "checkpoint/epoch-0003"
    (newest / "state.json").write_bytes(b"")  # as BackupAndRestore's metadata was left
    (newest / "state.weights.h5").write_bytes(b"")
    with pytest.warns(UserWarning, match="epoch-0003"):
        assert train_pool.main([*args, "--resume"]) == 0
    history = json.loads((tmp_path / "train_config.json").read_text())["history"]
    assert len(history["loss"]) == 2  # resumed after epoch 2, the last good checkpoint


def test_overwrite_starts_over(libraries, tmp_path):
    train, _ = libraries
    args = interrupted_run(train, tmp_path, 1)
    assert train_pool.main([*args, "--overwrite", "--epochs", "2"]) == 0
    history = json.loads((tmp_path / "train_config.json").read_text())["history"]
    assert len(history["loss"]) == 2


def test_a_second_writer_is_refused_by_the_lease(libraries, tmp_path, capsys):
    train, _ = libraries
    from features import lease

    with lease.acquire(str(tmp_path), "train_pool", 86400.0, False):
        assert train_pool.main(train_args(train, tmp_path, "--epochs", "1")) == 2
    assert "is being written by train_pool" in one_error_line(capsys)


def test_mixed_precision_trains_and_leaves_the_global_policy(libraries, tmp_path):
    train, _ = libraries
    args = train_args(train, tmp_path, "--epochs", "1", "--eval_fraction", "0.3")
    assert train_pool.main([*args, "--pooling", "mean", "--mixed_precision"]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"
    model = model_dir.load_model(str(tmp_path))
    assert model.output.dtype == "float32"


def test_gating_flags_and_the_old_spelling(capsys):
    base = ["--train_data", "x", "--output", "y"]
    parser = train_pool.build_parser()
    assert parser.parse(base)[0].gating is None
    assert parser.parse([*base, "--gating"])[0].gating is True
    assert parser.parse([*base, "--no_gating"])[0].gating is False
    assert parser.parse([*base, "--no-gating"])[0].gating is False
    assert "--no-gating is deprecated; use --no_gating" in capsys.readouterr().err


def test_eval_pool_writes_into_the_bucket_of_a_gs_model(
    netvlad_model, libraries, gcs_bucket, tmp_path
):
    from tests import gcs_emulator

    local = tmp_path / "model"
    shutil.copytree(netvlad_model, local, ignore=shutil.ignore_patterns("eval_metrics.json"))
    model = f"{gcs_bucket}/pool_model"
    gcs_emulator.upload_tree(local, model)
    _, held_out = libraries
    data = str(held_out.output / "frame/*.tfrecord")
    predictions = f"{gcs_bucket}/pool_eval/predictions.csv"
    args = ["--model", model, "--eval_data", data, "--predictions", predictions]
    assert eval_pool.main(args) == 0
    metrics = json.loads(gcs_emulator.read(f"{model}/eval_metrics.json"))
    assert metrics["num_videos"] == EVAL_VIDEOS and metrics["data"] == data
    rows = list(csv.reader(io.StringIO(gcs_emulator.read(predictions).decode())))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == EVAL_VIDEOS + 1
    assert not (local / "eval_metrics.json").exists()


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"rgb": np.zeros((3, 16), np.uint8)}, "feature 'rgb' holds 16 values per frame"),
        ({"audio": np.zeros((3, 32), np.uint8)}, "the records hold no feature 'rgb'"),
    ],
)
def test_records_that_do_not_fit_the_model_are_one_line(
    netvlad_model, tmp_path, capsys, features, message
):
    import tensorflow as tf

    from features.records import encode_frame_example

    path = tmp_path / "other.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(encode_frame_example("v", [1], features))
    assert eval_pool.main(["--model", str(netvlad_model), "--eval_data", str(path)]) == 2
    assert message in one_error_line(capsys)


def test_a_damaged_model_file_is_one_line(netvlad_model, libraries, tmp_path, capsys):
    local = tmp_path / "model"
    shutil.copytree(netvlad_model, local)
    keras_file = local / "model.keras"
    keras_file.write_bytes(keras_file.read_bytes()[:1000])
    _, held_out = libraries
    data = str(held_out.output / "frame/*.tfrecord")
    assert eval_pool.main(["--model", str(local), "--eval_data", data]) == 2
    line = one_error_line(capsys)
    assert "model.keras cannot be loaded" in line and str(keras_file) in line
