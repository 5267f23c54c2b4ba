"""tag_videos' files, without a job: TFRecord framing, CSV quoting, score text, the output
folder's life cycle (refuse, overwrite, stage, commit)."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from features import tfrecord_framing
from features.cli import UsageError
from pipelines import tagging_outputs, tagging_records

HOSTILE_IDS = ["plain", "new\nline", "carriage\rreturn", "com,ma", 'quo"te', " spaced ", "ビデオ"]


def tfrecord_bytes(tmp_path, payloads: list[bytes]) -> bytes:
    path = tmp_path / "written.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    return path.read_bytes()


def test_framing_reads_what_tensorflow_writes(tmp_path):
    payloads = [b"", b"x", bytes(range(256)) * 40]
    data = tfrecord_bytes(tmp_path, payloads)
    assert tfrecord_framing.has_tfrecord_header(data[:12])
    read = list(tagging_records.iter_records(io.BytesIO(data), "f.tfrecord"))
    assert [payload for _, payload in read] == payloads
    assert [offset for offset, _ in read] == [0, 16, 33]
    path = tmp_path / "written.tfrecord"
    assert tagging_records.count_records(str(path)) == 3
    assert tagging_records.file_kind(str(path)) == "records"


@pytest.mark.parametrize("head", [b"", b"\x00" * 12, b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00"])
def test_other_bytes_are_not_a_tfrecord(head):
    assert not tfrecord_framing.has_tfrecord_header(head)


@pytest.mark.parametrize("cut", [5, 16 + 12 + 3, -1])
def test_a_truncated_file_is_named_with_the_offset_of_the_broken_record(tmp_path, cut):
    data = tfrecord_bytes(tmp_path, [b"a" * 0, b"b" * 10, b"c" * 100])
    cut_at = cut if cut > 0 else len(data) + cut
    broken_offset = max(offset for offset in (0, 16, 42) if offset < cut_at)
    path = tmp_path / "cut.tfrecord"
    path.write_bytes(data[:cut_at])
    with pytest.raises(UsageError) as raised:
        list(tagging_records.iter_records(io.BytesIO(data[:cut_at]), str(path)))
    assert raised.value.where == f"{path} at byte {broken_offset}"
    assert "truncated" in raised.value.what
    with pytest.raises(UsageError) as counted:
        tagging_records.count_records(str(path))
    assert counted.value.where == f"{path} at byte {broken_offset}"


def test_a_flipped_byte_is_named_as_corrupt(tmp_path):
    data = bytearray(tfrecord_bytes(tmp_path, [b"a" * 10, b"b" * 10]))
    data[40] ^= 0xFF  # inside the second record's data (26 + 12 header bytes)
    with pytest.raises(UsageError, match="bad data checksum") as raised:
        list(tagging_records.iter_records(io.BytesIO(bytes(data)), "x.tfrecord"))
    assert raised.value.where == "x.tfrecord at byte 26"


def test_csv_round_trips_hostile_ids_through_pandas():
    rows = [(video_id, f"/v/{video_id}.mp4", 1, 0.5) for video_id in HOSTILE_IDS]
    data = tagging_outputs.csv_bytes(["id", "path", "rank", "score"], rows)
    assert b"\r\n" not in data.replace(b"carriage\rreturn", b"")
    frame = pd.read_csv(io.BytesIO(data), keep_default_na=False)
    assert list(frame["id"]) == HOSTILE_IDS
    assert list(frame["path"]) == [f"/v/{video_id}.mp4" for video_id in HOSTILE_IDS]
    assert list(frame["rank"]) == [1] * len(HOSTILE_IDS) and list(frame["score"]) == [0.5] * 7


def test_score_text_keeps_distinct_float32_scores_distinct():
    assert tagging_outputs.score_text(4.9e-7) != tagging_outputs.score_text(3.2e-7)
    scores = np.random.default_rng(0).random(10_000, np.float32) ** 8
    texts = [tagging_outputs.score_text(score) for score in scores]
    assert np.array_equal(np.array(texts, np.float64).astype(np.float32), scores)
    assert tagging_outputs.score_text(np.float32(0.1)) == "0.1"


def write_run(folder, run_id="r1"):
    """What one run leaves: every output kind, a thumbnail, a dead letter."""
    folder.mkdir(exist_ok=True)
    for name in ("tags.parquet", "tags.csv", "segments.parquet", "predictions.csv"):
        (folder / name).write_text(name)
    (folder / f"failed-{run_id}.jsonl").write_text("{}\n")
    (folder / "report" / "thumbnails").mkdir(parents=True)
    (folder / "report" / "thumbnails" / "a.jpg").write_bytes(b"jpg")
    (folder / "report" / "index.html").write_text("<html>")
    (folder / "tagging.json").write_text(json.dumps({"run_id": run_id}))


def test_an_earlier_run_is_refused_without_overwrite_and_deleted_with_it(tmp_path):
    write_run(tmp_path)
    (tmp_path / ".lease.json").write_text("{}")
    with pytest.raises(UsageError, match="earlier run") as raised:
        tagging_outputs.prepare_output(str(tmp_path), overwrite=False, keep=(".lease.json",))
    assert "--overwrite" in raised.value.fix
    tagging_outputs.prepare_output(str(tmp_path), overwrite=True, keep=(".lease.json",))
    assert sorted(path.name for path in tmp_path.iterdir()) == [".lease.json"]


def test_outputs_of_a_commit_cut_short_are_not_a_run_and_go_without_overwrite(tmp_path):
    write_run(tmp_path)
    (tmp_path / "tagging.json").unlink()  # the commit marker was never written
    tagging_outputs.prepare_output(str(tmp_path), overwrite=False)
    assert list(tmp_path.iterdir()) == []
    tagging_outputs.prepare_output(str(tmp_path / "not_yet"), overwrite=False)


def test_files_of_others_are_never_deleted(tmp_path):
    write_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write") as raised:
        tagging_outputs.prepare_output(str(tmp_path), overwrite=True)
    assert "notes.txt" in raised.value.what and (tmp_path / "tags.csv").exists()


def test_a_dead_runs_staging_folder_is_removed_and_not_an_earlier_run(tmp_path):
    staging = tmp_path / ".tagging-20260101T000000Z-abcdef"
    write_run(staging)
    tagging_outputs.prepare_output(str(tmp_path), overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        tagging_outputs.prepare_output(str(tmp_path / "out"), overwrite=True)


def test_commit_moves_everything_and_writes_tagging_json_last(tmp_path, monkeypatch):
    staging = tmp_path / ".tagging-r1"
    write_run(staging)
    moved = []
    rename = tagging_outputs.storage.rename
    monkeypatch.setattr(
        tagging_outputs.storage,
        "rename",
        lambda src, dst: (moved.append(dst.removeprefix(str(tmp_path) + "/")), rename(src, dst)),
    )
    tagging_outputs.commit(str(staging), str(tmp_path))
    assert moved[-2:] == ["report/index.html", "tagging.json"] and len(moved) == 8
    assert not staging.exists() and (tmp_path / "report/thumbnails/a.jpg").read_bytes() == b"jpg"
