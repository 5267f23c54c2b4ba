"""tag_videos end to end: a model trained on the sample library tags its raw videos and records."""

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from features.labels import Vocabulary
from features.quantize import dequantize
from pipelines import tag_videos, tagging_plan
from pooling_models import model_dir, tagging, train_pool
from tests import browser
from tests.extraction import BROKEN_INPUTS, frame_records

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
