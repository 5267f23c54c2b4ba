"""tag_videos runs that go wrong or meet each other: reruns into one output, a crash before
the commit, a held lease, hostile ids, damaged or wrong records and flags out of range."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from features import lease, records
from pipelines import tag_videos, tagging_records, tagging_steps
from pipelines.config import FaultPlan
from tests import browser, gcs_emulator
from tests.extraction import frame_records
from tests.pipelines.test_tag_videos import model, one_line_error, tag  # noqa: F401 (fixture)

HOSTILE_IDS = ["new\nline", "carriage\rreturn", "com,ma", 'quo"te', "caf\udce9", "ok"]
NOT_UTF8 = {"caf\udce9": "caf\\xe9"}  # a Latin-1 file name's byte, as the outputs show it
SHOWN_IDS = [NOT_UTF8.get(video_id, video_id) for video_id in HOSTILE_IDS]
OWN_OUTPUTS = {"tags.parquet", "tags.csv", "segments.parquet", "predictions.csv", "tagging.json"}


@pytest.fixture(scope="module")
def hostile_records(extracted, tmp_path_factory) -> str:
    """Frame records whose ids hold a newline, a CR, a comma and a quote, in a file whose name
    says nothing of TFRecords: only its framing tells what it is."""
    path = tmp_path_factory.mktemp("hostile") / "library.bin"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for video_id, record in zip(HOSTILE_IDS, frame_records(extracted.output), strict=False):
            writer.write(records.encode_frame_example(video_id, record.labels, record.features))
    return str(path)


def test_hostile_ids_round_trip_both_csv_files(model, hostile_records, tmp_path, capsys):  # noqa: F811
    summary = tag(model, hostile_records, tmp_path)
    assert summary["input_kind"] == "records" and summary["counts"]["tagged"] == len(HOSTILE_IDS)
    assert f"tag_videos: {len(HOSTILE_IDS)}/{len(HOSTILE_IDS)} videos" in capsys.readouterr().out
    parquet = pd.read_parquet(tmp_path / "tags.parquet")
    csv_tags = pd.read_csv(tmp_path / "tags.csv", keep_default_na=False)
    assert sorted(csv_tags["id"]) == sorted(parquet["id"])
    assert set(parquet["id"]) == set(SHOWN_IDS)
    assert np.array_equal(csv_tags["score"].to_numpy(np.float32), parquet["score"].to_numpy())
    predictions = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert sorted(predictions["VideoId"]) == sorted(SHOWN_IDS)
    for video_id, pairs in zip(predictions.VideoId, predictions.LabelConfidencePairs, strict=True):
        tokens = pairs.split()
        labels, scores = [int(t) for t in tokens[::2]], np.array(tokens[1::2], np.float32)
        video = parquet[parquet.id == video_id].sort_values("rank")
        assert labels[: len(video)] == list(video.label_index)
        assert np.array_equal(scores[: len(video)], video["score"].to_numpy())  # exact
    assert 'data-id="caf\\xe9"' in (tmp_path / "report/index.html").read_text(encoding="utf-8")


def test_a_second_run_into_one_folder_shows_only_its_own_outputs(
    model,  # noqa: F811
    extracted,
    tmp_path_factory,
    capsys,
):
    """An earlier raw-video run left failures and thumbnails: refused without --overwrite;
    with it, the records run's report shows none of them."""
    output = tmp_path_factory.mktemp("twice") / "tags"
    first = tag(model, extracted.library, output, "--segment_seconds", "2")
    assert first["counts"]["failed"] > 0 and list((output / "report/thumbnails").iterdir())
    records = str(extracted.output / "frame")  # a folder of records: told apart by content
    args = ["--model", str(model), "--input", records, "--output", str(output)]
    capsys.readouterr()
    assert tag_videos.main(args) == 2
    error = one_line_error(capsys)
    assert "earlier run" in error and "--overwrite" in error
    assert json.loads((output / "tagging.json").read_text())["run_id"] == first["run_id"]
    second = tag(model, records, output, "--overwrite")
    assert second["input_kind"] == "records" and second["counts"]["failed"] == 0
    assert not (output / "report/thumbnails").exists()
    assert {path.name for path in output.glob("failed-*")} == {f"failed-{second['run_id']}.jsonl"}
    dom = browser.dump_dom(output / "report/index.html")
    assert "No failed inputs." in dom and 'class="failed"' not in dom
    assert 'data-count="failed">0<' in dom and "<img" not in dom


def test_a_run_that_dies_before_the_commit_leaves_no_output(model, extracted, tmp_path):  # noqa: F811
    records = str(extracted.output / "frame/*.tfrecord")
    config = tag_videos.TagConfig(model=str(model), input=records, output=str(tmp_path / "tags"))
    with pytest.raises(RuntimeError, match="fail_before_commit"):
        tag_videos.run(config, faults=FaultPlan(fail_before_commit=True))
    left = {path.name for path in (tmp_path / "tags").iterdir()}
    assert not left & OWN_OUTPUTS and lease.LEASE_FILE not in left
    summary = tag_videos.run(config)  # no --overwrite needed: nothing was committed
    assert summary["counts"]["tagged"] > 0
    assert {path.name for path in (tmp_path / "tags").iterdir()} == OWN_OUTPUTS | {
        "report",
        f"failed-{summary['run_id']}.jsonl",
    }


def test_a_held_lease_refuses_a_second_run(model, extracted, tmp_path, capsys):  # noqa: F811
    output = str(tmp_path / "tags")
    records = str(extracted.output / "frame/*.tfrecord")
    with lease.acquire(output, "tag_videos", 3600, break_lease=False):
        code = tag_videos.main(["--model", str(model), "--input", records, "--output", output])
        assert code == 2
        assert "is being written by tag_videos pid" in one_line_error(capsys)
    assert not (tmp_path / "tags" / "tags.csv").exists()


def cut_shard(extracted, tmp_path) -> tuple[str, int]:
    """A copy of a frame shard cut inside its second record -> (path, that record's offset)."""
    shard = sorted((extracted.output / "frame").glob("*.tfrecord"))[0]
    data = shard.read_bytes()
    first_length = int.from_bytes(data[:8], "little")
    second = 12 + first_length + 4
    cut = tmp_path / "cut" / "shard.tfrecord"
    cut.parent.mkdir()
    cut.write_bytes(data[: second + 20])
    return str(cut), second


def test_record_input_errors_are_one_line(model, extracted, tmp_path, capsys):  # noqa: F811
    base = ["--model", str(model), "--output", str(tmp_path / "tags")]
    truncated, offset = cut_shard(extracted, tmp_path)
    cases = [
        (["--input", str(tmp_path / "none/*.tfrecord")], "no files matched"),
        (["--input", str(tmp_path / "none/*.tfrecord"), "--input_kind", "records"], "no record"),
        (["--input", truncated], f"truncated TFRecord ({truncated} at byte {offset})"),
        (["--input", str(extracted.output / "video/*.tfrecord")], "video-level records"),
        (["--input", str(extracted.library), "--input_kind", "records"], "not a TFRecord file"),
        (["--input", str(extracted.output)], "matches TFRecords"),  # records beside pca.npz, ...
    ]
    for args, expected in cases:
        assert tag_videos.main([*base, *args]) == 2, args
        assert expected in one_line_error(capsys)
    assert not (tmp_path / "tags" / "tagging.json").exists()


def test_a_min_score_that_leaves_no_tag_says_so(model, extracted, tmp_path, capsys):  # noqa: F811
    records = str(extracted.output / "frame/*.tfrecord")
    best = tag(model, records, tmp_path / "all")["top_score"]
    above = float(np.nextafter(np.float32(best), np.float32(2)))
    args = ["--model", str(model), "--input", records, "--output", str(tmp_path / "none")]
    capsys.readouterr()
    assert tag_videos.main([*args, "--min_score", repr(above)]) == 2
    error = one_line_error(capsys)
    assert f"--min_score {above:g}" in error and "no tag reached it" in error


@pytest.mark.parametrize("value", ["5", "-0.1", "nan", "inf"])
def test_min_score_out_of_range_is_one_line(value, tmp_path, capsys):
    args = ["--model", "m", "--input", "i", "--output", str(tmp_path), "--min_score", value]
    with pytest.raises(SystemExit) as exited:
        tag_videos.main(args)
    assert exited.value.code == 2
    assert "--min_score" in one_line_error(capsys)


def test_batch_size_is_a_warned_alias(model, hostile_records, tmp_path, capsys):  # noqa: F811
    args = ["--model", str(model), "--input", hostile_records, "--output", str(tmp_path)]
    assert tag_videos.main([*args, "--batch_size", "8"]) == 0
    assert "--batch_size is deprecated; use --frames_per_batch" in capsys.readouterr().err


def test_help_is_quick_and_needs_no_tensorflow_or_beam():
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "for name in ('tensorflow', 'keras', 'apache_beam', 'pyarrow'):\n"
        "    sys.modules[name] = None\n"
        "from pipelines import tag_videos\n"
        "try:\n"
        "    tag_videos.main(['--help'])\n"
        "except SystemExit as done:\n"
        "    print('EXIT', done.code, time.perf_counter() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "--frames_per_batch FRAMES_PER_BATCH frames per CNN batch" in text
    assert "(formerly --batch_size) (default: 32)" in text
    assert "--input_kind" in text and "--overwrite" in text
    assert "repeat it for an ensemble" in text and "--ensemble_weights" in text
    _, code, seconds = done.stdout.strip().splitlines()[-1].split()
    assert code == "0" and float(seconds) < 1.0


def test_ensemble_flags_that_cannot_work_are_one_line(tmp_path, capsys):
    base = ["--model", "a", "--model", "b", "--input", "i", "--output", str(tmp_path / "o")]
    cases = [
        (["--ensemble_weights", "1"], "1 weights for 2 models (--ensemble_weights 1)"),
        (["--ensemble_weights", "0,0"], "the weights sum to 0"),
        (["--ensemble_weights", "x,1"], "'x' is not a finite number >= 0"),
        (["--model", str(tmp_path / "o")], "is also --model or --input"),
    ]
    for flags, expected in cases:
        assert tag_videos.main([*base, *flags]) == 2
        assert expected in one_line_error(capsys)


def test_flag_types_reject_what_cannot_work(capsys):
    for flag, value in [("--top_k", "0"), ("--segment_seconds", "nan"), ("--smooth", "0")]:
        args = ["--model", "m", "--input", "i", "--output", "o", flag, value]
        with pytest.raises(SystemExit):
            tag_videos.main(args)
        assert flag in one_line_error(capsys)


def test_a_bucket_model_and_output_record_the_url_and_link_thumbnails(
    model,  # noqa: F811
    extracted,
    gcs_bucket,
):
    model_url = f"{gcs_bucket}/tagging/model"
    gcs_emulator.upload_tree(model, model_url)
    output = f"{gcs_bucket}/tagging/tags"
    videos = str(extracted.library / "stripes" / "*.mp4")
    assert tag_videos.main(["--model", model_url, "--input", videos, "--output", output]) == 0
    summary = json.loads(gcs_emulator.read(f"{output}/tagging.json"))
    assert summary["model"] == model_url  # not the local copy the launcher read
    names = gcs_emulator.list_names(output)
    thumbnails = [name for name in names if name.startswith("report/thumbnails/")]
    assert len(thumbnails) == summary["counts"]["tagged"] == summary["counts"]["seen"] > 0
    page = gcs_emulator.read(f"{output}/report/index.html").decode()
    assert page.count('<img class="thumb"') == len(thumbnails)
    assert not [name for name in names if name.startswith((".tagging-", lease.LEASE_FILE))]


def test_a_video_the_cnn_or_the_model_fails_on_fails_alone(model, extracted, tmp_path, monkeypatch):  # noqa: F811
    """An exception in the CNN (raw videos) or NaN scores from the pooling model (records)
    put that one video in the dead letter; the others are tagged."""
    stripes = sorted((extracted.library / "stripes").glob("*.mp4"))
    failing = stripes[0].stem
    config = tag_videos.TagConfig(
        model=str(model),
        input=str(extracted.library / "stripes" / "*.mp4"),
        output=str(tmp_path / "raw"),
    )
    counts = tag_videos.run(config, faults=FaultPlan(fail_embed_ids=frozenset({failing})))["counts"]
    assert counts["tagged"] == len(stripes) - 1 and counts["failed_by_reason/embed_error"] == 1
    score_video = tagging_steps.tagging.score_video

    def nan_for_one(scorer, frames, *args):
        scores = score_video(scorer, frames, *args)
        return (
            scores
            if len(frames["rgb"]) != len(first.features["rgb"])
            else type(scores)(np.full_like(scores.video, np.nan), scores.segments)
        )

    first = frame_records(extracted.output)[0]
    lengths = [len(record.features["rgb"]) for record in frame_records(extracted.output)]
    monkeypatch.setattr(tagging_steps.tagging, "score_video", nan_for_one)
    records = str(extracted.output / "frame/*.tfrecord")
    summary = tag(model, records, tmp_path / "records")
    failed = lengths.count(len(first.features["rgb"]))
    assert summary["counts"]["failed_by_reason/tag_error"] == failed
    assert summary["counts"]["tagged"] == len(lengths) - failed
    (dead_letter,) = (tmp_path / "records").glob("failed-*.jsonl")
    assert "non-finite scores" in dead_letter.read_text()


def test_a_model_missing_its_pca_cannot_tag_raw_videos(model, extracted, tmp_path, capsys):  # noqa: F811
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    (broken / "pca.npz").unlink()
    args = ["--model", str(broken), "--input", str(extracted.library / "stripes")]
    assert tag_videos.main([*args, "--output", str(tmp_path / "tags")]) == 2
    assert f"{broken}/pca.npz is missing (--model {broken})" in one_line_error(capsys)


def test_a_damaged_record_file_met_while_reading_is_one_line(
    model,  # noqa: F811
    extracted,
    tmp_path,
    capsys,
    monkeypatch,
):
    """gs:// record files are not scanned up front: the reader names the damage, the job
    ends with one line and commits nothing."""
    monkeypatch.setattr(tagging_records, "count_records", lambda path: 0)
    truncated, offset = cut_shard(extracted, tmp_path)
    args = ["--model", str(model), "--input", truncated, "--output", str(tmp_path / "tags")]
    assert tag_videos.main(args) == 2
    error = one_line_error(capsys)
    assert f"truncated TFRecord ({truncated} at byte {offset})" in error
    assert "nothing was committed" in error and "while running" not in error
    assert not {path.name for path in (tmp_path / "tags").iterdir()} & OWN_OUTPUTS
