"""End-to-end extraction over a real sample library with the tiny backbone."""

import json

import numpy as np
import pytest
import tensorflow as tf

from features import records
from features.labels import Vocabulary
from features.pca import PcaTransform
from features.quantize import dequantize
from features.vggish_pca import load_vggish_pca
from pipelines import extract_features
from pipelines.config import FaultPlan
from pipelines.pca_fit import same_pca
from tests.extraction import (
    BROKEN_INPUTS,
    SAMPLE_VIDEOS,
    exit_status,
    extract,
    frame_records,
    one_line_error,
    read_failures,
    run_tiny,
    tiny_args,
)


def test_every_input_is_accounted_for(extracted):
    counts = extracted.manifest["counts"]
    # + the zeroed, the truncated and the duplicate video
    assert counts["seen"] == SAMPLE_VIDEOS + len(BROKEN_INPUTS) + 3
    assert counts["ok"] == SAMPLE_VIDEOS + 1
    assert counts["truncated"] == 1 and counts["unlabeled"] == 1
    assert counts["seen"] == counts["ok"] + counts["failed"]
    assert counts["failed"] == len(extracted.failures)
    reasons = {failure["path"]: failure["reason"] for failure in extracted.failures}
    expected = {relative: reason for relative, (_, reason) in BROKEN_INPUTS.items()}
    expected["broken/zeros.mp4"] = "no_decodable_frames"
    for relative, reason in expected.items():
        assert reasons.pop(str(extracted.library / relative)) == reason
    ((duplicate_path, duplicate_reason),) = reasons.items()
    # `x.mkv` sorts before `x.mp4`, so the .mkv copy keeps the id.
    assert duplicate_path.endswith(".mp4") and duplicate_reason == "duplicate_id"
    assert counts["failed_by_reason"] == {
        "duplicate_id": 1, "empty_file": 1, "not_a_video": 2, "no_video_stream": 1,
        "no_decodable_frames": 1,
    }  # fmt: skip
    assert all(failure["detail"] and failure["run_id"] for failure in extracted.failures)


def test_frame_records_have_youtube8m_layout(extracted):
    found = frame_records(extracted.output)
    assert len(found) == SAMPLE_VIDEOS + 1
    assert (
        sum(len(record.features["rgb"]) for record in found)
        == extracted.manifest["counts"]["frames"]
    )
    for record in found:
        frames = record.features["rgb"]
        assert frames.dtype == np.uint8 and frames.shape[1] == 32
        assert 1 <= len(frames) <= 300
        assert len(record.labels) == (0 if record.video_id == "cut/clip" else 1)
    # The official starter code's parse path reads our records as they are.
    path = next((extracted.output / "frame").glob("*.tfrecord"))
    serialized = next(iter(tf.data.TFRecordDataset(str(path))))
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "id": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
        },
        sequence_features={"rgb": tf.io.FixedLenSequenceFeature([], dtype=tf.string)},
    )
    decoded = tf.reshape(tf.io.decode_raw(sequence["rgb"], tf.uint8), [-1, 32])
    assert decoded.shape[0] >= 1 and context["id"].numpy()


def test_video_records_hold_the_mean_of_whitened_frames(extracted):
    frames_by_id = {record.video_id: record for record in frame_records(extracted.output)}
    paths = sorted(str(path) for path in (extracted.output / "video").glob("*.tfrecord"))
    videos = [records.decode_video_example(raw) for raw in records.read_tfrecords(paths)]
    assert sorted(video.video_id for video in videos) == sorted(frames_by_id)
    for video in videos:
        quantized = frames_by_id[video.video_id].features["rgb"]
        unclipped = ((quantized > 0) & (quantized < 255)).all(0)  # dims never clipped
        assert unclipped.sum() >= 4
        frame_mean = dequantize(quantized).mean(0)
        # Quantizing moves each frame by at most one level (4/255); the mean moves no further.
        error = np.abs(video.features["mean_rgb"] - frame_mean)[unclipped]
        assert error.max() <= 4 / 255


def test_labels_and_vocabulary(extracted):
    vocabulary = Vocabulary.from_csv((extracted.output / "vocabulary.csv").read_text())
    assert len(vocabulary) == extracted.manifest["num_classes"] >= 4
    assert list(vocabulary.names) == sorted(vocabulary.names)
    for record in frame_records(extracted.output):
        if record.labels:
            assert record.video_id.startswith(vocabulary.names[record.labels[0]] + "/")


def test_manifest_describes_how_to_rebuild_the_features(extracted):
    manifest = extracted.manifest
    assert manifest["backbone"] == "tiny"
    assert manifest["weights"]["kind"] == "random" and manifest["weights"]["seed"] == 0
    assert manifest["fps"] == 1.0 and manifest["max_frames"] == 300
    assert manifest["pca"]["file"] == "pca.npz" and manifest["pca"]["source"] == "fit"
    assert manifest["pca"]["output_dims"] == 32 == manifest["feature_sizes"]["rgb"]
    assert 0 < manifest["pca"]["sample_frames"] <= manifest["counts"]["frames"] + 20
    assert manifest["id_root"] == str(extracted.library)
    assert (extracted.output / "pca.npz").exists()
    for path in manifest["frame_records"] + manifest["video_records"] + manifest["failed_records"]:
        assert (extracted.output / path).exists(), path
        assert manifest["run_id"] in path
    assert {"tensorflow", "apache-beam", "av", "keras"} <= set(manifest["versions"])


def test_linear_probe_separates_classes_from_quantized_bytes(extracted):
    """Random He-init features stay informative: a least-squares probe on the first- and
    second-half means (the order classes differ only in order) beats chance by far."""
    found = [record for record in frame_records(extracted.output) if record.labels]
    features = []
    for record in found:
        frames = dequantize(record.features["rgb"])
        half = max(1, len(frames) // 2)
        features.append(np.concatenate([frames[:half].mean(0), frames[half:].mean(0), [1.0]]))
    features = np.asarray(features)
    labels = np.array([record.labels[0] for record in found])
    classes = np.unique(labels)
    targets = (labels[:, None] == classes[None]).astype(np.float64)
    correct = 0
    for held_out in range(len(found)):  # leave-one-out
        train = np.arange(len(found)) != held_out
        weights = np.linalg.lstsq(features[train], targets[train], rcond=1e-3)[0]
        correct += classes[np.argmax(features[held_out] @ weights)] == labels[held_out]
    chance = 1 / len(classes)
    assert correct / len(found) >= chance + 0.4


def test_second_run_reuses_the_pca_and_writes_new_shards(extracted, tmp_path):
    output = tmp_path / "again"
    output.mkdir()
    for name in ("pca.npz", "audio_pca.npz"):
        (output / name).write_bytes((extracted.output / name).read_bytes())
    args = tiny_args(extracted.library / "broken", output)
    assert extract_features.main(args) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert [stream["pca"]["source"] for stream in manifest["streams"]] == ["reused", "reused"]
    broken = len(BROKEN_INPUTS) + 1
    assert manifest["counts"] == {**manifest["counts"], "seen": broken, "ok": 0, "failed": broken}
    assert len(read_failures(output)) == broken
    assert not (output / "vocabulary.csv").exists()


@pytest.mark.parametrize(
    ("flags", "where"),
    [
        (["--input", "/no/such/folder"], "(--input /no/such/folder)"),
        (["--fps", "0"], "(--fps)"),
        (["--fps", "nan"], "(--fps)"),
        (["--fps", "inf"], "(--fps)"),
        (["--lease_timeout", "-inf"], "(--lease_timeout)"),
        (["--pca_dims", "999"], "(--pca_dims 999)"),
        (["--weights", "/no/weights.h5"], "/no/weights.h5"),
        (["--labels", "/no/labels.csv"], "(--labels /no/labels.csv)"),
        (["--pca", "/no/pca.npz"], "(--pca /no/pca.npz)"),
        (["--max-frames", "5"], "did you mean --max_frames?"),
        (["--streams", "audio"], "(--streams)"),
        (["--streams", "rgb,smell"], "(--streams)"),
        (["--audio_pca_dims", "999"], "(--audio_pca_dims 999)"),
        (["--audio_weights", "/no/vggish.weights.h5"], "/no/vggish.weights.h5"),
        (["--audio_pca", "/no/pca.npz"], "(--audio_pca /no/pca.npz)"),
    ],
)
def test_bad_flags_fail_fast_in_one_line_naming_the_flag(extracted, tmp_path, capsys, flags, where):
    args = tiny_args(extracted.library, tmp_path / "out") + flags
    assert exit_status(args) == 2
    assert where in one_line_error(capsys)
    assert not list((tmp_path / "out").glob("frame/*"))


def test_an_output_that_is_a_file_is_refused_before_any_work(extracted, tmp_path, capsys):
    output = tmp_path / "out"
    output.write_text("not a folder")
    assert extract_features.main(tiny_args(extracted.library, output)) == 2
    assert f"is a file, not a folder (--output {output})" in one_line_error(capsys)


def test_an_empty_input_folder_says_no_videos_matched(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos/notes.txt").write_text("no videos here")
    assert extract_features.main(tiny_args(tmp_path / "videos", tmp_path / "out")) == 2
    line = one_line_error(capsys)
    assert "no videos matched (1 file(s) with other extensions)" in line and "PCA" not in line
    assert not (tmp_path / "out/pca.npz").exists()


def test_a_folder_with_glob_characters_is_taken_literally(extracted, tmp_path):
    library = tmp_path / "clips[1]"
    library.mkdir()
    for video in sorted(extracted.library.glob("*/*.mp4"))[:2]:
        (library / video.name).write_bytes(video.read_bytes())
    (tmp_path / "clips1").mkdir()  # what `[1]` as a glob would match instead
    (tmp_path / "clips1/other.mp4").write_bytes(b"")
    pcas = ("--pca", str(extracted.output / "pca.npz"))
    pcas += ("--audio_pca", str(extracted.output / "audio_pca.npz"))
    result = extract(library, tmp_path / "out", *pcas)
    assert result.manifest["counts"]["ok"] == 2 and result.manifest["counts"]["seen"] == 2


def test_a_torn_pca_is_named_with_the_fix(extracted, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    whole = (extracted.output / "pca.npz").read_bytes()
    (output / "pca.npz").write_bytes(whole[: len(whole) // 2])  # a disk-full leftover
    assert extract_features.main(tiny_args(extracted.library, output)) == 2
    line = one_line_error(capsys)
    assert f"({output / 'pca.npz'}): delete it or pass --pca fit" in line


def test_batch_size_is_a_deprecated_alias_of_frames_per_batch(extracted, tmp_path, capsys):
    args = tiny_args(extracted.library, tmp_path / "out", "--batch_size", "8", "--fps", "nan")
    assert exit_status(args) == 2
    assert "--batch_size is deprecated; use --frames_per_batch" in capsys.readouterr().err


def test_a_cnn_or_quantizer_failure_fails_one_video_not_the_job(extracted, tmp_path):
    ids = sorted(record.video_id for record in frame_records(extracted.output))
    broken_cnn, nan_features = ids[0], ids[1]
    faults = FaultPlan(fail_embed_ids=frozenset({broken_cnn}), nan_embed_ids={nan_features})
    pcas = ("--pca", str(extracted.output / "pca.npz"))
    pcas += ("--audio_pca", str(extracted.output / "audio_pca.npz"))
    run_tiny(extracted.library, tmp_path / "out", *pcas, faults=faults)
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["counts"]["ok"] == extracted.manifest["counts"]["ok"] - 2
    assert manifest["counts"]["failed_by_reason"]["embed_error"] == 2
    errors = {f["video_id"]: f["detail"] for f in read_failures(tmp_path / "out")}
    assert "injected CNN failure" in errors[broken_cnn] and "NaN" in errors[nan_features]
    assert {broken_cnn, nan_features}.isdisjoint(
        r.video_id for r in frame_records(tmp_path / "out")
    )


def test_bad_files_behind_flags_fail_in_one_line_before_the_job(extracted, tmp_path, capsys):
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(bytes(range(256)) * 20)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("")
    bad_vocabulary = tmp_path / "vocabulary.csv"
    bad_vocabulary.write_text("Idx,Nm\n0,cat\n")
    cases = {
        ("--weights", str(garbage)): f"--weights {garbage}: cannot load",
        ("--labels", str(tmp_path / "folder")): "is a folder, not a file (--labels",
        ("--vocabulary", str(bad_vocabulary)): "expected a header with Index,Name",
        ("--id_root", str(tmp_path)): f"is not under the id root (--id_root {tmp_path})",
    }
    for flags, expected in cases.items():
        assert exit_status(tiny_args(extracted.library, tmp_path / "out", *flags)) == 2
        assert expected in one_line_error(capsys)
    output_under_a_file = tmp_path / "a_file/out"
    assert exit_status(tiny_args(extracted.library, output_under_a_file)) == 2
    assert "a_file is a file, not a folder" in one_line_error(capsys)
    assert not list(tmp_path.glob("out/frame/*"))


def two_videos(extracted, folder):
    """A library of two of the sample videos (with sound), for runs about flags."""
    folder.mkdir()
    for video in sorted(extracted.library.glob("*/*.mp4"))[:2]:
        (folder / video.name).write_bytes(video.read_bytes())
    return folder


def has_audio_values(example) -> list[int]:
    """The has_audio context of a parsed frame- or video-level record ([] when absent)."""
    features = example.context if hasattr(example, "context") else example.features
    if "has_audio" not in features.feature:
        return []
    return list(features.feature["has_audio"].int64_list.value)


def test_default_run_writes_audio_beside_rgb(extracted):
    """Default --streams rgb,audio: one 128-byte audio row per rgb row, has_audio in both
    records, mean_audio, audio_pca.npz and an audio stream in the manifest."""
    manifest = extracted.manifest
    frame_paths = sorted(str(path) for path in (extracted.output / "frame").glob("*.tfrecord"))
    without_audio = 0
    for raw in records.read_tfrecords(frame_paths):
        record = records.decode_frame_example(raw, ("rgb", "audio"))
        rgb, audio = record.features["rgb"], record.features["audio"]
        assert audio.dtype == np.uint8 and audio.shape == (len(rgb), 128)
        assert (audio != 0).any()  # never the starter's zero bytes
        (has_audio,) = has_audio_values(tf.train.SequenceExample.FromString(raw))
        assert has_audio in (0, 1)
        without_audio += has_audio == 0
    assert manifest["counts"]["no_audio"] == without_audio
    assert manifest["counts"]["audio_truncated"] <= manifest["counts"]["ok"]
    video_paths = sorted(str(path) for path in (extracted.output / "video").glob("*.tfrecord"))
    for raw in records.read_tfrecords(video_paths):
        video = records.decode_video_example(raw, ("mean_rgb", "mean_audio"))
        assert video.features["mean_audio"].shape == (128,)
        assert has_audio_values(tf.train.Example.FromString(raw)) in ([0], [1])
    assert (extracted.output / "audio_pca.npz").exists()
    rgb_stream, audio_stream = manifest["streams"]
    assert rgb_stream["name"] == "rgb" and rgb_stream["pca"]["file"] == "pca.npz"
    assert audio_stream["name"] == "audio" and audio_stream["backbone"] == "vggish"
    assert audio_stream["weights"]["kind"] == "random"
    assert (audio_stream["frame_height"], audio_stream["frame_width"]) == (96, 64)
    assert audio_stream["pca"]["file"] == "audio_pca.npz" and audio_stream["dims"] == 128
    assert audio_stream["pca"]["source"] == "fit" and audio_stream["pca"]["sample_frames"] > 0
    assert manifest["feature_sizes"] == {"rgb": 32, "audio": 128}
    # The official starter code's parse path reads both feature lists and the context.
    serialized = next(iter(tf.data.TFRecordDataset(frame_paths[0])))
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "id": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
            "has_audio": tf.io.FixedLenFeature([], tf.int64),
        },
        sequence_features={
            name: tf.io.FixedLenSequenceFeature([], dtype=tf.string) for name in ("rgb", "audio")
        },
    )
    rgb = tf.reshape(tf.io.decode_raw(sequence["rgb"], tf.uint8), [-1, 32])
    audio = tf.reshape(tf.io.decode_raw(sequence["audio"], tf.uint8), [-1, 128])
    assert rgb.shape[0] == audio.shape[0] >= 1 and int(context["has_audio"]) in (0, 1)


def test_streams_rgb_writes_todays_records(extracted, tmp_path):
    library = two_videos(extracted, tmp_path / "library")
    pca = str(extracted.output / "pca.npz")
    result = extract(library, tmp_path / "out", "--streams", "rgb", "--pca", pca)
    assert [stream["name"] for stream in result.manifest["streams"]] == ["rgb"]
    assert result.manifest["feature_sizes"] == {"rgb": 32}
    assert not (tmp_path / "out/audio_pca.npz").exists()
    frame_paths = sorted(str(path) for path in (tmp_path / "out/frame").glob("*.tfrecord"))
    video_paths = sorted(str(path) for path in (tmp_path / "out/video").glob("*.tfrecord"))
    for raw in records.read_tfrecords(frame_paths):
        example = tf.train.SequenceExample.FromString(raw)
        assert set(example.feature_lists.feature_list) == {"rgb"}
        assert set(example.context.feature) == {"id", "labels"}
    for raw in records.read_tfrecords(video_paths):
        assert set(tf.train.Example.FromString(raw).features.feature) == {
            "id", "labels", "mean_rgb"
        }  # fmt: skip


def test_vggish_weights_missing_from_the_cache_is_one_line(
    extracted, tmp_path, monkeypatch, capsys
):
    keras_home = tmp_path / "keras"
    keras_home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    args = tiny_args(extracted.library, tmp_path / "out", "--audio_weights", "vggish")
    assert exit_status(args) == 2
    line = one_line_error(capsys)
    assert str(keras_home / "models/vggish.weights.h5") in line and "vggish_convert" in line
    assert not (tmp_path / "out").exists()


def write_vggish_pca(path, seed: int = 0) -> str:
    """A vggish_pca_params.npz as AudioSet publishes it: whitened eigenvectors as rows."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(128, 128)))
    eigen_vectors = rotation.T / rng.uniform(0.5, 2.0, size=(128, 1))
    np.savez(path, pca_eigen_vectors=eigen_vectors, pca_means=rng.normal(size=(128, 1)))
    return str(path)


def test_vggish_pca_is_accepted_and_later_runs_keep_it(extracted, tmp_path, capsys):
    library = two_videos(extracted, tmp_path / "library")
    vggish_pca = write_vggish_pca(tmp_path / "vggish_pca_params.npz")
    rgb_pca = str(extracted.output / "pca.npz")
    output = tmp_path / "out"
    result = extract(library, output, "--pca", rgb_pca, "--audio_pca", vggish_pca)
    audio = result.manifest["streams"][1]["pca"]
    assert audio["source"] == vggish_pca and audio["output_dims"] == 128
    assert audio["input_dims"] == 128 and audio["epsilon"] == 0
    written = PcaTransform.load_npz(output / "audio_pca.npz")
    assert same_pca(written, load_vggish_pca(vggish_pca))
    committed = (output / "audio_pca.npz").read_bytes()
    refusals = {
        "fit": "a new audio PCA fit would replace",
        str(extracted.output / "audio_pca.npz"): "this audio PCA differs",
    }
    for audio_pca, expected in refusals.items():
        args = tiny_args(library, output, "--skip_existing", "--pca", rgb_pca)
        assert exit_status([*args, "--audio_pca", audio_pca]) == 2
        assert expected in one_line_error(capsys)
    args = tiny_args(library, output, "--skip_existing", "--streams", "rgb", "--pca", rgb_pca)
    assert exit_status(args) == 2
    assert "differ from the committed runs' (rgb,audio)" in one_line_error(capsys)
    assert (output / "audio_pca.npz").read_bytes() == committed
