"""tag_videos end to end: a model trained on the sample library tags its raw videos and records;
an ensemble of models tags records with the weighted mean of their scores."""

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from features import manifest
from features import records as fv_records
from features.labels import Vocabulary
from features.quantize import dequantize
from framevlad_proto import framevlad_pb2
from pipelines import tag_videos, tagging_plan
from pooling_models import model_dir, tagging, train_pool
from pooling_models.model_config import ModelConfig
from tests import browser
from tests.extraction import BROKEN_INPUTS, frame_records
from tests.pooling_models.synthetic import two_stream_manifest, write_model_dir, write_records

CLIP_FRAMES = 4  # shorter than every sample video, so tagging averages several clips


@pytest.fixture(scope="module")
def model(extracted, tmp_path_factory):
    output = tmp_path_factory.mktemp("tagging_model")
    args = ["--train_data", str(extracted.output / "frame/*.tfrecord"), "--output", str(output)]
    args += ["--eval_data", str(extracted.output / "frame/*.tfrecord"), "--epochs", "2"]
    args += ["--cluster_size", "4", "--hidden_size", "16", "--batch_size", "8"]
    assert train_pool.main([*args, "--max_frames", str(CLIP_FRAMES)]) == 0
    return output


def one_line_error(capsys) -> str:
    """The run's stderr: exactly one `tag_videos: error: ...` line and no traceback."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tag_videos: error: "), lines
    return lines[0]


def model_inputs(window: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    num_frames = np.array([len(window["rgb"])], np.int32)
    return {**{name: values[None] for name, values in window.items()}, "num_frames": num_frames}


def tag(model, source, output, *flags) -> dict:
    args = ["--model", str(model), "--input", str(source), "--output", str(output), *flags]
    assert tag_videos.main([*args, "--frames_per_batch", "16"]) == 0
    return json.loads((output / "tagging.json").read_text())


@pytest.fixture(scope="module")
def raw_tags(model, extracted, tmp_path_factory):
    output = tmp_path_factory.mktemp("raw_tags")
    return output, tag(model, extracted.library, output, "--segment_seconds", "2")


@pytest.fixture(scope="module")
def record_tags(model, extracted, tmp_path_factory):
    output = tmp_path_factory.mktemp("record_tags")
    records = extracted.output / "frame/*.tfrecord"
    return output, tag(model, records, output, "--segment_seconds", "2")


def test_every_input_is_tagged_or_failed(raw_tags, extracted):
    output, summary = raw_tags
    counts = summary["counts"]
    assert counts["seen"] == extracted.manifest["counts"]["seen"]
    assert counts["tagged"] == extracted.manifest["counts"]["ok"]
    assert counts["seen"] == counts["tagged"] + counts["failed"]
    failed = [json.loads(line) for path in output.glob("failed*.jsonl") for line in path.open()]
    library = str(extracted.library) + "/"
    reasons = {row["path"].removeprefix(library): row["reason"] for row in failed}
    for relative, (_, reason) in BROKEN_INPUTS.items():
        assert reasons[relative] == reason


def test_the_model_pools_rgb_and_audio_and_raw_videos_rebuild_both(model):
    """train_pool's default on our records is rgb,audio; tagging raw videos then computes
    both streams with the manifest's networks and both PCA files."""
    train_config = json.loads((model / "train_config.json").read_text())
    assert train_config["model"]["feature_names"] == ["rgb", "audio"]
    loaded = tagging_plan.load_model(str(model))
    assert [spec.name for spec in loaded.specs] == ["rgb", "audio"]
    assert loaded.specs[1].backbone == "vggish" and loaded.specs[1].weights == "random"
    assert loaded.specs[1].pca == f"{model}/audio_pca.npz" and (model / "audio_pca.npz").exists()


def test_a_model_trained_on_rgb_only_tags_with_rgb_only(model, tmp_path):
    rgb_only = tmp_path / "rgb_model"
    shutil.copytree(model, rgb_only)
    train_config = json.loads((rgb_only / "train_config.json").read_text())
    train_config["model"]["feature_names"] = ["rgb"]
    train_config["model"]["feature_sizes"] = train_config["model"]["feature_sizes"][:1]
    (rgb_only / "train_config.json").write_text(json.dumps(train_config))
    loaded = tagging_plan.load_model(str(rgb_only))
    assert loaded.feature_names == ("rgb",) and [spec.name for spec in loaded.specs] == ["rgb"]


def test_a_model_missing_its_audio_pca_cannot_tag_raw_videos(model, extracted, tmp_path, capsys):
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / "audio_pca.npz").unlink()
    args = ["--model", str(broken), "--input", str(extracted.library)]
    assert tag_videos.main([*args, "--output", str(tmp_path / "tags")]) == 2
    assert f"{broken}/audio_pca.npz is missing (--model {broken})" in one_line_error(capsys)


def test_raw_videos_and_their_records_get_the_same_tags(raw_tags, record_tags):
    raw = pd.read_parquet(raw_tags[0] / "tags.parquet").sort_values(["id", "rank"])
    from_records = pd.read_parquet(record_tags[0] / "tags.parquet").sort_values(["id", "rank"])
    assert len(raw) == len(from_records) > 0
    assert list(raw["label_index"]) == list(from_records["label_index"])
    assert np.abs(raw["score"].to_numpy() - from_records["score"].to_numpy()).max() <= 1e-3
    assert (raw["path"] != "").all() and (from_records["path"] == "").all()


def test_top_k_in_order_with_vocabulary_names(raw_tags, model):
    tags = pd.read_parquet(raw_tags[0] / "tags.parquet")
    names = Vocabulary.from_csv((model / "vocabulary.csv").read_text()).names
    for _, video in tags.groupby("id"):
        assert list(video["rank"]) == list(range(1, len(video) + 1)) and len(video) == 4
        assert list(video["score"]) == sorted(video["score"], reverse=True)
    assert all(
        names[index] == name for index, name in zip(tags.label_index, tags.label_name, strict=True)
    )
    csv_tags = pd.read_csv(raw_tags[0] / "tags.csv", keep_default_na=False)
    assert list(csv_tags.columns) == ["id", "path", "rank", "label_index", "label_name", "score"]
    assert len(csv_tags) == len(tags)
    predictions = pd.read_csv(raw_tags[0] / "predictions.csv")
    assert list(predictions.columns) == ["VideoId", "LabelConfidencePairs"]
    assert set(predictions.VideoId) == set(tags.id)


def test_min_score_keeps_the_tags_at_or_above_it(model, extracted, record_tags, tmp_path):
    """The threshold is the median best score, so some videos keep tags and some lose all."""
    unfiltered = pd.read_parquet(record_tags[0] / "tags.parquet")
    best = unfiltered[unfiltered["rank"] == 1].set_index("id")["score"]
    threshold = float(best.median())
    assert (best < threshold).any() and (best >= threshold).any()
    records = extracted.output / "frame/*.tfrecord"
    flags = ("--top_k", "2", "--min_score", repr(threshold))
    summary = tag(model, records, tmp_path, *flags)
    tags = pd.read_parquet(tmp_path / "tags.parquet")
    expected = unfiltered[(unfiltered["rank"] <= 2) & (unfiltered["score"] >= threshold)]
    assert len(tags) == len(expected) > 0
    assert sorted(zip(tags.id, tags.label_index, strict=True)) == sorted(
        zip(expected.id, expected.label_index, strict=True)
    )
    assert summary["counts"]["tagged"] == (best >= threshold).sum()
    assert summary["counts"]["below_min_score"] == (best < threshold).sum()


def test_segments_cover_each_video_without_gaps(raw_tags, extracted):
    segments = pd.read_parquet(raw_tags[0] / "segments.parquet")
    frames = {
        record.video_id: len(record.features["rgb"]) for record in frame_records(extracted.output)
    }
    assert set(segments["id"]) == set(frames)
    for video_id, rows in segments.groupby("id"):
        windows = sorted(set(zip(rows.start_s, rows.end_s, strict=True)))
        assert windows[0][0] == 0 and windows[-1][1] == pytest.approx(frames[video_id] / 1.0)
        assert all(end == start for (_, end), (start, _) in itertools.pairwise(windows))
        assert all(end - start <= 2 for start, end in windows)


def test_long_video_is_tagged_whole_by_clip_averaging(model, extracted, tmp_path):
    """A video of 3 × max_frames seconds: its score is the mean over its three clips."""
    longest = max(frame_records(extracted.output), key=lambda record: len(record.features["rgb"]))
    assert len(longest.features["rgb"]) > 2 * CLIP_FRAMES
    tag(model, extracted.output / "frame/*.tfrecord", tmp_path, "--top_k", "4")
    tags = pd.read_parquet(tmp_path / "tags.parquet")
    tags = tags[tags.id == longest.video_id].sort_values("label_index")
    keras_model = model_dir.load_model(str(model))
    frames = {name: dequantize(values) for name, values in longest.features.items()}
    assert set(frames) == {"rgb", "audio"}
    windows = tagging.split_frames(frames, CLIP_FRAMES)
    clips = tagging.predict_windows(tagging.WindowScorer(keras_model), windows, 8)
    eager = [np.asarray(keras_model(model_inputs(window)))[0] for window in windows]
    assert np.allclose(clips, eager, atol=1e-6)
    assert np.allclose(tags["score"], clips.mean(0), atol=1e-5)


def test_model_without_manifest_cannot_tag_raw_videos(model, extracted, tmp_path, capsys):
    bare = tmp_path / "bare_model"
    shutil.copytree(model, bare)
    (bare / "manifest.json").unlink()
    args = ["--model", str(bare), "--input", str(extracted.library)]
    assert tag_videos.main([*args, "--output", str(tmp_path / "tags")]) == 2
    error = one_line_error(capsys)
    assert "manifest.json" in error and f"--model {bare}" in error


def test_report_shows_every_video_and_failure_in_chromium(raw_tags, tmp_path):
    output, summary = raw_tags
    dom = browser.dump_dom(output / "report/index.html")
    tags = pd.read_parquet(output / "tags.parquet")
    for video_id in set(tags.id):
        assert f'data-id="{video_id}"' in dom
    for relative in BROKEN_INPUTS:
        assert relative in dom
    assert len(list((output / "report/thumbnails").iterdir())) == summary["counts"]["tagged"]


# Ensembles: model directories written straight from a ModelConfig and records written with
# the record encoders, so these tests run no extraction and no training.
ENSEMBLE_SIZES = {"rgb": 24, "audio": 8}
ENSEMBLE_NAMES = ("cat", "dog", "eel")
ENSEMBLE_HEAD = {"num_classes": 3, "cluster_size": 2, "hidden_size": 8, "head": "logistic"}


def ensemble_model(root, name: str, feature: str, seed: int, **extra) -> str:
    """A model directory taking one feature: rgb (mean pooling, 4-frame clips) or audio
    (NetVLAD, 3-frame clips)."""
    pooling = "mean" if feature == "rgb" else "netvlad"
    config = ModelConfig(
        pooling=pooling,
        feature_names=(feature,),
        feature_sizes=(ENSEMBLE_SIZES[feature],),
        **ENSEMBLE_HEAD,
    )
    clip = 4 if feature == "rgb" else 3
    extra.setdefault("label_names", ENSEMBLE_NAMES)
    return str(write_model_dir(root / name, config, seed, max_frames=clip, **extra))


@pytest.fixture(scope="module")
def ensemble_inputs(tmp_path_factory):
    """(records glob, rgb model, audio model): 12 videos of 1 to 11 seconds."""
    root = tmp_path_factory.mktemp("ensemble")
    write_records(root / "features", 12, 5, ENSEMBLE_SIZES, frames=-11)
    manifest.write_manifest(
        str(root / "features/manifest.json"), two_stream_manifest(ENSEMBLE_SIZES)
    )
    rgb = ensemble_model(root, "rgb", "rgb", 1)
    audio = ensemble_model(root, "audio", "audio", 2)
    return str(root / "features/frame/*.tfrecord"), rgb, audio


def test_two_models_tag_records_with_their_weighted_mean(ensemble_inputs, tmp_path):
    """Each model scores the video from its own feature over its own clip length; tags and
    segments carry 1/4 of the rgb model's scores plus 3/4 of the audio model's."""
    records_glob, rgb, audio = ensemble_inputs
    flags = ["--model", audio, "--ensemble_weights", "1,3", "--top_k", "3"]
    summary = tag(rgb, records_glob, tmp_path, *flags, "--segment_seconds", "2")
    assert summary["models"] == [rgb, audio] and summary["ensemble_weights"] == [0.25, 0.75]
    assert summary["counts"]["tagged"] == 12
    tags = pd.read_parquet(tmp_path / "tags.parquet").set_index(["id", "label_index"])["score"]
    segments = pd.read_parquet(tmp_path / "segments.parquet")
    segments = segments.set_index(["id", "start_s", "label_index"])["score"]
    scorers = {url: tagging.WindowScorer(model_dir.load_model(url)) for url in (rgb, audio)}
    records_path = tagging_plan.find_inputs(records_glob, "records").record_files
    for raw in fv_records.read_tfrecords(records_path):
        record = fv_records.decode_frame_example(raw, ("rgb", "audio"))
        frames = {name: dequantize(values) for name, values in record.features.items()}
        by_model = [
            tagging.score_video(scorers[url], frames, clip, 2, 3)
            for url, clip in ((rgb, 4), (audio, 3))
        ]
        video = 0.25 * by_model[0].video + 0.75 * by_model[1].video
        assert abs(video - by_model[0].video).max() > 1e-3  # the audio model counts
        got = tags.loc[record.video_id].sort_index().to_numpy()
        np.testing.assert_allclose(got, video, rtol=0, atol=1e-6)
        mixed = 0.25 * by_model[0].segments + 0.75 * by_model[1].segments  # [S, C]
        for index, expected in enumerate(mixed):
            row = segments.loc[(record.video_id, index * 2.0)].sort_index().to_numpy()
            np.testing.assert_allclose(row, expected, rtol=0, atol=1e-6)


def test_ensemble_features_are_the_union_and_a_shared_stream_must_match(tmp_path, capsys):
    """An rgb model and an audio model: rgb is rebuilt from the rgb model's manifest, audio
    from the audio model's. Where manifests differ only in where files lay or how the PCA
    was come by, the models agree; a stream both take must come from one extraction."""
    features = two_stream_manifest(ENSEMBLE_SIZES)
    elsewhere = framevlad_pb2.Manifest()
    elsewhere.CopyFrom(features)
    elsewhere.streams[0].pca.source = "/other/machine/pca.npz"
    elsewhere.streams[0].weights.kind = "path"
    elsewhere.streams[0].weights.path = "/other/machine/tiny.weights.h5"
    elsewhere.streams[0].weights.sha256 = "abc"
    features.streams[0].weights.kind = "path"
    features.streams[0].weights.path = "/here/tiny.weights.h5"
    features.streams[0].weights.sha256 = "abc"
    rgb = ensemble_model(tmp_path, "rgb", "rgb", 1, features=features)
    audio = ensemble_model(tmp_path, "audio", "audio", 2, features=elsewhere)
    twin = ensemble_model(tmp_path, "twin", "rgb", 3, features=elsewhere)
    models = tagging_plan.load_ensemble([rgb, audio, twin], (0.5, 0.25, 0.25))
    assert models.feature_names == ("rgb", "audio") and models.feature_sizes == (24, 8)
    assert [spec.name for spec in models.specs] == ["rgb", "audio"]
    assert models.spec_models == (rgb, audio) and models.fps == 1.0
    assert models.specs[0].weights == "/here/tiny.weights.h5"

    other_backbone = framevlad_pb2.Manifest()
    other_backbone.CopyFrom(features)
    other_backbone.streams[0].backbone = "resnet50"
    other_rate = framevlad_pb2.Manifest()
    other_rate.CopyFrom(features)
    other_rate.fps = 2.0
    other_pca = framevlad_pb2.Manifest()
    other_pca.CopyFrom(features)
    other_pca.streams[0].pca.sha256 = "refitted"
    cases = [
        ("backbone", other_backbone, f"its rgb features were extracted differently (backbone "
         f"'resnet50', 'tiny' in --model {rgb})"),
        ("rate", other_rate, f"its features are at 2 fps, 1 in --model {rgb}"),
        ("pca", other_pca, "(pca.sha256 'refitted', 'rgb-pca-sha256' in --model"),
        ("names", None, f"models disagree on the vocabulary (--model {tmp_path}/names): class 0"),
    ]  # fmt: skip
    for name, changed, expected in cases:
        extra = {"features": changed} if changed else {"label_names": ("ant", "dog", "eel")}
        other = ensemble_model(tmp_path, name, "rgb", 4, **extra)
        args = ["--model", rgb, "--model", other, "--input", str(tmp_path / "none/*.tfrecord")]
        assert tag_videos.main([*args, "--output", str(tmp_path / "tags")]) == 2
        error = one_line_error(capsys)
        assert expected in error and f"(--model {other})" in error, error
    assert not (tmp_path / "tags").exists()  # refused before the output was touched
