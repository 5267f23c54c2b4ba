"""gs:// inputs and outputs of every console script against a real GCS emulator.

Every test reads the bucket afterwards: an exit code alone cannot tell a file written into
the bucket from one left in a local staging copy."""

import csv
import io
import json
import tempfile
import time

import pytest

from features import records
from pipelines import extract_features, tag_videos
from pooling_models import eval_pool, train_pool
from tests import gcs_emulator
from tests.broken_videos import write_text
from tests.extraction import sample_videos

VIDEOS = 4


@pytest.fixture(scope="module")
def bucket_library(gcs_bucket, tmp_path_factory) -> str:
    local = sample_videos(tmp_path_factory.mktemp("gcs_library"), VIDEOS)
    (local / "broken").mkdir()
    write_text(str(local / "broken/notes.mp4"))
    url = f"{gcs_bucket}/videos"
    gcs_emulator.upload_tree(local, url)
    return url


def gcs_args(source: str, output: str, *extra: str) -> list[str]:
    return [
        "--input", source, "--output", output, "--backbone", "tiny", "--weights", "random",
        "--audio_weights", "random", "--pca_dims", "16", "--audio_pca_dims", "16",
        "--labels", f"{source}/labels.csv", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bucket_features(bucket_library, gcs_bucket) -> str:
    output = f"{gcs_bucket}/features"
    assert extract_features.main(gcs_args(bucket_library, output)) == 0
    return output


def test_extract_features_reads_and_writes_a_bucket(bucket_features):
    names = gcs_emulator.list_names(bucket_features)
    manifest = json.loads(gcs_emulator.read(f"{bucket_features}/manifest.json"))
    counts = manifest["counts"]
    assert counts["seen"] == VIDEOS + 1 and counts["ok"] == VIDEOS and counts["failed"] == 1
    assert manifest["id_root"].startswith("gs://") and "pca.npz" in names
    assert any(name.startswith("manifests/") and name.endswith(".json") for name in names)
    (failed,) = [name for name in names if name.startswith("failed-")]
    failure = json.loads(gcs_emulator.read(f"{bucket_features}/{failed}"))
    assert failure["reason"] == "not_a_video" and failure["path"].startswith("gs://")
    ids = []
    for name in manifest["frame_records"]:
        data = gcs_emulator.read(f"{bucket_features}/{name}")
        ids += [record.video_id for record in decode_all(data, name)]
    assert len(ids) == len(set(ids)) == VIDEOS


def decode_all(data: bytes, name: str) -> list[records.FrameRecord]:
    """Records of a downloaded shard (the emulator is not reachable by TensorFlow's gs://)."""
    with tempfile.NamedTemporaryFile(suffix=name.replace("/", "_")) as local:
        local.write(data)
        local.flush()
        return [records.decode_frame_example(raw) for raw in records.read_tfrecords([local.name])]


def test_missing_bucket_fails_fast_naming_it(bucket_library, capsys):
    args = gcs_args(bucket_library, "gs://no-such-bucket/features")
    assert extract_features.main(args) == 2
    error = capsys.readouterr().err
    assert "gs://no-such-bucket" in error and "--output" in error and "Traceback" not in error


def test_dataflow_dry_run_builds_the_job_without_submitting(bucket_library, gcs_bucket, capsys):
    gpu = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    dataflow = [
        "--runner", "DataflowRunner", "--project", "framevlad-test", "--region", "us-central1",
        "--temp_location", f"{gcs_bucket}/tmp", "--machine_type", "g2-standard-4",
        "--max_num_workers", "8", "--dataflow_service_options", gpu,
        "--sdk_container_image", "europe-docker.pkg.dev/p/r/framevlad:1",
        "--experiments", "no_use_multiple_sdk_containers", "--dry_run=True",
    ]  # fmt: skip
    output = f"{gcs_bucket}/dry"
    assert extract_features.main(gcs_args(bucket_library, output, *dataflow)) == 0
    printed = capsys.readouterr().out
    assert "not submitted" in printed and "g2-standard-4" in printed and "nvidia-l4" in printed
    assert "framevlad:1" in printed and "8 max" in printed
    assert "audio:" in printed and "vggish (random)" in printed
    assert gcs_emulator.list_names(output) == []  # nothing written, nothing submitted


@pytest.fixture(scope="module")
def bucket_model(bucket_features, gcs_bucket) -> str:
    model = f"{gcs_bucket}/model"
    frames = f"{bucket_features}/frame/*.tfrecord"
    train = ["--train_data", frames, "--eval_data", frames, "--output", model, "--epochs", "1"]
    train += ["--cluster_size", "4", "--hidden_size", "8", "--batch_size", "4"]
    assert train_pool.main(train) == 0
    return model


def test_train_pool_writes_the_model_into_the_bucket(bucket_model, bucket_features):
    stored = gcs_emulator.list_names(bucket_model)
    for name in ("model.keras", "train_config.json", "metrics.json", "manifest.json", "pca.npz"):
        assert name in stored, name
    config = json.loads(gcs_emulator.read(f"{bucket_model}/train_config.json"))
    frames = f"{bucket_features}/frame/*.tfrecord"
    assert config["train_data"] == frames and config["raw_video_tagging"] is True
    assert json.loads(gcs_emulator.read(f"{bucket_model}/metrics.json"))["num_videos"] == VIDEOS
    assert ".lease.json" not in stored


def test_eval_pool_writes_metrics_and_predictions_into_the_bucket(
    bucket_model, bucket_features, gcs_bucket, tmp_path
):
    frames = f"{bucket_features}/frame/*.tfrecord"
    predictions = f"{gcs_bucket}/evaluation/predictions.csv"
    args = ["--model", bucket_model, "--eval_data", frames, "--predictions", predictions]
    args += ["--cache_dir", str(tmp_path / "cache"), "--parallel_reads", "2"]
    assert eval_pool.main(args) == 0
    shards = [
        name for name in gcs_emulator.list_names(bucket_features) if name.startswith("frame/")
    ]
    copies = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert len(copies) == len(shards) and all(name.endswith(".tfrecord") for name in copies)
    metrics = json.loads(gcs_emulator.read(f"{bucket_model}/eval_metrics.json"))
    assert metrics["num_videos"] == VIDEOS and 0.0 <= metrics["gap"] <= 1.0
    rows = list(csv.reader(io.StringIO(gcs_emulator.read(predictions).decode())))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"] and len(rows) == VIDEOS + 1


def test_tag_videos_reads_a_bucket_model_and_records_its_url(
    bucket_model, bucket_library, gcs_bucket
):
    tags = f"{gcs_bucket}/tags"
    assert (
        tag_videos.main(["--model", bucket_model, "--input", bucket_library, "--output", tags]) == 0
    )
    summary = json.loads(gcs_emulator.read(f"{tags}/tagging.json"))
    assert summary["model"] == bucket_model
    counts = summary["counts"]
    assert (counts["seen"], counts["tagged"], counts["failed"]) == (VIDEOS + 1, VIDEOS, 1)
    stored = gcs_emulator.list_names(tags)
    assert {"tags.parquet", "tags.csv", "segments.parquet", "predictions.csv"} <= set(stored)
    tagged = list(csv.DictReader(io.StringIO(gcs_emulator.read(f"{tags}/tags.csv").decode())))
    assert len({row["id"] for row in tagged}) == VIDEOS
    page = gcs_emulator.read(f"{tags}/report/index.html").decode()
    assert page.count('class="video"') == VIDEOS
    assert sum(name.startswith("report/thumbnails/") for name in stored) == VIDEOS
    assert ".lease.json" not in stored


def test_a_held_lease_in_the_bucket_refuses_a_second_writer(bucket_library, gcs_bucket, capsys):
    output = f"{gcs_bucket}/leased"
    holder = {"host": "elsewhere", "pid": 7, "started": "then", "started_unix": time.time()}
    holder |= {"tool": "extract_features", "lease_id": "other"}
    gcs_emulator.write(f"{output}/.lease.json", json.dumps(holder).encode())
    assert extract_features.main(gcs_args(bucket_library, output)) == 2
    error = capsys.readouterr().err
    assert "extract_features pid 7 on elsewhere" in error and "--break_lease" in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert gcs_emulator.list_names(output) == [".lease.json"]  # nothing else written
