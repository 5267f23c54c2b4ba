"""rgb + audio in train_pool / eval_pool: the manifest's streams as the default features,
YouTube-8M's official records (rgb 1024 + audio 128 bytes per second, no manifest), early
fusion of the streams and the non-local pooling, trained end to end.

Records are written here with the record encoders, so the tests need no extraction. Labels
follow the audio rows only; the rgb rows are noise, so a model that learns at all uses audio.
"""

import json

import keras
import pytest

from features import manifest
from features.formats import AUDIO_KEY, MANIFEST_FILE, RGB_KEY
from pooling_models import eval_pool, model_dir, train_pool, train_steps
from tests.pooling_models.synthetic import NUM_CLASSES, two_stream_manifest, write_records


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


def test_nonlocal_early_fusion_trains_and_round_trips(extracted, tmp_path):
    """--pooling nonlocal --fusion early: one non-local block + NetVLAD over rgb and audio
    concatenated per frame (24 + 8 dims). The loss falls, the attention leaves its identity
    start, and train_config.json records both, so eval_pool rebuilds the model."""
    output = tmp_path / "model"
    flags = ["--pooling", "nonlocal", "--fusion", "early", "--nonlocal_bottleneck", "4"]
    # Four epochs: after two the loss had fallen by 7.5 to 12 % over runs (threads make
    # training nondeterministic), too close to the bound below.
    args = train_args(extracted / "frame/*.tfrecord", output, *flags, "--epochs", "4")
    assert train_pool.main(args) == 0
    train_config = model_dir.read_train_config(str(output))
    model_config = train_config.model
    assert (model_config.pooling, model_config.fusion) == ("nonlocal", "early")
    assert model_config.nonlocal_pool == "netvlad" and model_config.nonlocal_bottleneck == 4
    losses = train_config.history["loss"]
    assert losses[-1] < 0.9 * losses[0]
    model = model_dir.load_model(str(output))
    fused = model.get_layer("fused_nonlocal")
    assert fused.cluster_size == 4 and fused.block.width == 4
    assert fused.aggregate.feature_size == 24 + 8
    assert not [layer for layer in model.layers if layer.name.startswith(("rgb_", "audio_"))]
    assert sorted(tensor.name for tensor in model.inputs) == ["audio", "num_frames", "rgb"]
    assert abs(keras.ops.convert_to_numpy(fused.block.output_projection.kernel)).max() > 0
    data = str(extracted / "frame/*.tfrecord")
    evaluated = eval_pool.run(eval_pool.EvalPoolConfig(str(output), data))
    assert evaluated["num_videos"] == 60
    stored = json.loads((output / model_dir.EVAL_METRICS_FILE).read_text())
    assert stored["gap"] == evaluated["gap"]


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


def test_every_manifest_stream_is_a_default_and_any_subset_can_be_picked(tmp_path):
    """Records with flow, i3d, c3d and fovea beside rgb and audio: all six by default, each
    with its manifest size; --feature_names picks any of them, in the order given."""
    sizes = {"rgb": 24, "audio": 8, "flow": 12, "i3d": 16, "c3d": 10, "fovea": 20}
    features = two_stream_manifest(sizes)
    for name in ("flow", "i3d", "c3d", "fovea"):
        stream = features.streams.add(name=name, backbone=f"{name}_net", dims=sizes[name])
        stream.weights.kind, stream.frame_height, stream.frame_width = "random", 32, 32
        stream.pca.file, stream.pca.output_dims = f"{name}_pca.npz", sizes[name]
    manifest.write_manifest(str(tmp_path / MANIFEST_FILE), features)
    data = str(tmp_path / "frame/*.tfrecord")

    def resolved(*flags: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        args, _ = train_pool.build_parser().parse(["--train_data", data, "--output", "m", *flags])
        found = train_steps.resolve_features(train_pool.config_from_args(vars(args)), data, "")
        assert found.num_classes == NUM_CLASSES
        return found.names, found.sizes

    assert resolved() == (tuple(sizes), tuple(sizes.values()))
    assert resolved("--feature_names", "c3d,rgb,flow") == (("c3d", "rgb", "flow"), (10, 24, 12))
    assert resolved("--feature_names", "fovea") == (("fovea",), (20,))


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
