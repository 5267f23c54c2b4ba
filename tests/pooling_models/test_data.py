import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from features.quantize import dequantize
from features.records import encode_frame_example, encode_video_example
from pooling_models.data import dequantize_tf, frame_dataset, video_dataset

DIMS = 8
NUM_CLASSES = 5
# Frame counts of the test videos, deliberately uneven.
LENGTHS = {"a": 3, "b": 7, "c": 1, "d": 5, "e": 4, "f": 9}
LABELS = {"a": [0], "b": [1, 4], "c": [], "d": [2], "e": [3, 0], "f": [4]}


def _frames(video_id: str, num_frames: int, dims: int = DIMS) -> np.ndarray:
    """[T, D] uint8 whose first column is the frame index, so sampled frames can be told apart."""
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    frames = rng.integers(0, 256, size=(num_frames, dims), dtype=np.uint8)
    frames[:, 0] = np.arange(num_frames)
    return frames


def _write(path: Path, records: list[bytes]) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def _frame_records(ids: list[str]) -> list[bytes]:
    return [encode_frame_example(i, LABELS[i], {"rgb": _frames(i, LENGTHS[i])}) for i in ids]


@pytest.fixture
def frame_files(tmp_path: Path) -> str:
    _write(tmp_path / "part-0.tfrecord", _frame_records(["a", "b", "c"]))
    _write(tmp_path / "part-1.tfrecord", _frame_records(["d", "e", "f"]))
    return str(tmp_path / "part-*.tfrecord")


def _read(dataset: tf.data.Dataset) -> list[tuple[dict, np.ndarray]]:
    return [
        ({key: value.numpy() for key, value in inputs.items()}, labels.numpy())
        for inputs, labels in dataset
    ]


def _by_id(batches: list[tuple[dict, np.ndarray]]) -> dict[str, tuple[np.ndarray, int, list]]:
    """id -> (frames [T, D], num_frames, labels) over all batches."""
    videos = {}
    for inputs, labels in batches:
        for row, video_id in enumerate(inputs["id"]):
            videos[video_id.decode()] = (
                inputs["rgb"][row],
                int(inputs["num_frames"][row]),
                np.flatnonzero(labels[row]).tolist(),
            )
    return videos


def _frame_indices(frames: np.ndarray, num_frames: int) -> list[int]:
    """Recovers stored frame indices from the dequantized first column."""
    levels = np.arange(256, dtype=np.uint8)
    return [int(np.argmin(np.abs(dequantize(levels) - value))) for value in frames[:num_frames, 0]]


def test_dequantize_tf_matches_numpy_exactly():
    levels = np.arange(256, dtype=np.uint8).reshape(32, 8)
    expected = dequantize(levels)
    np.testing.assert_array_equal(dequantize_tf(tf.constant(levels)).numpy(), expected)
    as_bytes = tf.constant([row.tobytes() for row in levels])
    np.testing.assert_array_equal(dequantize_tf(as_bytes).numpy(), expected)
    with pytest.raises(TypeError, match="float32"):
        dequantize_tf(tf.zeros([2], tf.float32))


def test_frame_batches_pad_to_longest_in_batch(frame_files):
    dataset = frame_dataset(
        frame_files, num_classes=NUM_CLASSES, batch_size=2, training=False, feature_sizes=(DIMS,)
    )
    batches = _read(dataset)
    # Not training: files in name order, records in file order, interleaved one by one.
    ids = [video_id.decode() for inputs, _ in batches for video_id in inputs["id"]]
    assert ids == ["a", "d", "b", "e", "c", "f"]
    assert [video_id.decode() for video_id in _ids_of(dataset)] == ids
    for inputs, labels in batches:
        num_frames = inputs["num_frames"]
        assert inputs["rgb"].dtype == np.float32 and num_frames.dtype == np.int32
        assert inputs["rgb"].shape == (len(num_frames), num_frames.max(), DIMS)
        assert labels.shape == (len(num_frames), NUM_CLASSES) and labels.dtype == np.float32
    for video_id, (frames, num_frames, labels) in _by_id(batches).items():
        assert num_frames == LENGTHS[video_id]
        stored = _frames(video_id, LENGTHS[video_id])
        np.testing.assert_array_equal(frames[:num_frames], dequantize(stored))
        assert not frames[num_frames:].any()  # padding is zeros
        assert labels == sorted(LABELS[video_id])


def _ids_of(dataset: tf.data.Dataset) -> list[bytes]:
    return [video_id for inputs, _ in dataset for video_id in inputs["id"].numpy()]


def test_max_frames_truncates(frame_files):
    dataset = frame_dataset(
        frame_files,
        num_classes=NUM_CLASSES,
        batch_size=6,
        training=False,
        feature_sizes=(DIMS,),
        max_frames=4,
        sample_frames=2,  # ignored when evaluating
    )
    ((inputs, _),) = _read(dataset)
    assert inputs["rgb"].shape == (6, 4, DIMS)
    for video_id, (frames, num_frames, _) in _by_id(_read(dataset)).items():
        assert num_frames == min(LENGTHS[video_id], 4)
        assert _frame_indices(frames, num_frames) == list(range(num_frames))


def test_legacy_video_id(tmp_path):
    example = tf.train.SequenceExample.FromString(_frame_records(["b"])[0])
    context = example.context.feature
    context["video_id"].CopyFrom(context["id"])
    del context["id"]
    path = _write(tmp_path / "old.tfrecord", [example.SerializeToString()])
    dataset = frame_dataset(
        path, num_classes=NUM_CLASSES, batch_size=4, training=False, feature_sizes=(DIMS,)
    )
    assert _ids_of(dataset) == [b"b"]


def test_features_align_to_the_shortest(tmp_path):
    rgb, audio = _frames("x", 6), _frames("x", 6, dims=4)
    example = tf.train.SequenceExample.FromString(
        encode_frame_example("x", [1], {"rgb": rgb, "audio": audio})
    )
    del example.feature_lists.feature_list["audio"].feature[-2:]  # audio: 4 frames
    path = _write(tmp_path / "av.tfrecord", [example.SerializeToString()])
    dataset = frame_dataset(
        path,
        feature_names=("rgb", "audio"),
        feature_sizes=(DIMS, 4),
        num_classes=NUM_CLASSES,
        batch_size=1,
        training=False,
    )
    ((inputs, _),) = _read(dataset)
    assert inputs["num_frames"].tolist() == [4]
    np.testing.assert_array_equal(inputs["rgb"][0], dequantize(rgb[:4]))
    np.testing.assert_array_equal(inputs["audio"][0], dequantize(audio[:4]))


def _sampled(frame_files: str, seed: int, epochs: int = 1) -> list[dict]:
    dataset = frame_dataset(
        frame_files,
        num_classes=NUM_CLASSES,
        batch_size=4,
        training=True,
        feature_sizes=(DIMS,),
        sample_frames=3,
        seed=seed,
    )
    draws = []
    for _ in range(epochs):
        batches = _read(dataset)
        for inputs, _ in batches:
            assert inputs["rgb"].shape[1] <= 3
        draws.append(
            {
                video_id: _frame_indices(frames, num_frames)
                for video_id, (frames, num_frames, _) in _by_id(batches).items()
            }
        )
    return draws


def test_sample_frames_sorted_unique_in_range_and_seeded(frame_files):
    first, second_epoch = _sampled(frame_files, seed=3, epochs=2)
    assert sorted(first) == sorted(LENGTHS)
    for video_id, indices in first.items():
        assert len(indices) == min(3, LENGTHS[video_id])
        assert indices == sorted(set(indices))
        assert all(0 <= index < LENGTHS[video_id] for index in indices)
        if LENGTHS[video_id] <= 3:
            assert indices == list(range(LENGTHS[video_id]))
    assert _sampled(frame_files, seed=3) == [first]
    # New draws each epoch (with 7- and 9-frame videos a repeat is all but impossible).
    assert second_epoch != first


def test_split_is_disjoint_covering_and_stable(tmp_path):
    ids = [f"video{i}" for i in range(40)]
    records = [encode_frame_example(i, [], {"rgb": _frames(i, 1)}) for i in ids]
    path = _write(tmp_path / "many.tfrecord", records)

    def split_ids(split: str, seed: int, training: bool) -> set[str]:
        dataset = frame_dataset(
            path,
            num_classes=NUM_CLASSES,
            batch_size=7,
            training=training,
            feature_sizes=(DIMS,),
            seed=seed,
            eval_fraction=0.25,
            split=split,
        )
        return {video_id.decode() for video_id in _ids_of(dataset)}

    train, held_out = split_ids("train", 0, True), split_ids("eval", 0, False)
    assert not train & held_out and train | held_out == set(ids)
    assert split_ids("eval", 9, True) == held_out
    # FarmHash of the id alone decides: pinned so a change of hash cannot go unnoticed.
    assert sorted(held_out) == [
        "video1", "video15", "video18", "video22", "video26", "video31", "video32", "video33",
        "video5", "video8",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="eval_fraction"):
        frame_dataset(path, num_classes=2, batch_size=1, training=False, split="eval")


def test_label_out_of_range_is_an_error(tmp_path):
    record = encode_frame_example("bad", [1, 7], {"rgb": _frames("bad", 2)})
    path = _write(tmp_path / "labels.tfrecord", [record])
    dataset = frame_dataset(
        path, num_classes=NUM_CLASSES, batch_size=1, training=False, feature_sizes=(DIMS,)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 5\)[\s\S]*bad"):
        _read(dataset)


def test_wrong_feature_size_is_an_error(frame_files):
    dataset = frame_dataset(
        frame_files, num_classes=NUM_CLASSES, batch_size=2, training=False, feature_sizes=(16,)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="rgb: frames are not 16 bytes"):
        _read(dataset)


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_length"])
@pytest.mark.parametrize("training", [False, True])
def test_corrupt_file_error_names_the_file(tmp_path, damage, training):
    good = _write(tmp_path / "good.tfrecord", _frame_records(["a", "b", "c"]))
    bad = _write(tmp_path / "bad.tfrecord", _frame_records(["d", "e", "f"]))
    data = bytearray(Path(bad).read_bytes())
    if damage == "truncate":
        data = data[:-10]
    elif damage == "flip_payload":
        data[len(data) // 2] ^= 0xFF
    else:
        data[0] ^= 0x01  # first record's length no longer matches its CRC
    Path(bad).write_bytes(bytes(data))
    dataset = frame_dataset(
        [good, bad], num_classes=NUM_CLASSES, batch_size=2, training=training, feature_sizes=(DIMS,)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="bad.tfrecord: corrupt") as error:
        _read(dataset)
    assert "good.tfrecord" not in str(error.value)


def test_empty_file_is_fine_and_missing_pattern_is_named(tmp_path, frame_files):
    empty = _write(tmp_path / "empty.tfrecord", [])
    dataset = frame_dataset(
        [empty, frame_files], num_classes=NUM_CLASSES, batch_size=4, training=False,
        feature_sizes=(DIMS,),
    )  # fmt: skip
    assert len(_ids_of(dataset)) == len(LENGTHS)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        frame_dataset(str(tmp_path / "nothing-here*"), num_classes=2, batch_size=1, training=False)


def test_video_dataset(tmp_path):
    rng = np.random.default_rng(0)
    means = {i: (rng.normal(size=DIMS), rng.normal(size=3)) for i in LENGTHS}
    records = [
        encode_video_example(i, LABELS[i], {"mean_rgb": rgb, "mean_audio": audio})
        for i, (rgb, audio) in means.items()
    ]
    legacy = tf.train.Example.FromString(records[0])
    legacy.features.feature["video_id"].CopyFrom(legacy.features.feature.pop("id"))
    records[0] = legacy.SerializeToString()
    path = _write(tmp_path / "video.tfrecord", records)
    dataset = video_dataset(
        path,
        feature_names=("mean_rgb", "mean_audio"),
        feature_sizes=(DIMS, 3),
        num_classes=NUM_CLASSES,
        batch_size=4,
        training=True,
    )
    seen = set()
    for inputs, labels in _read(dataset):
        assert inputs["mean_rgb"].shape == (len(inputs["id"]), DIMS)
        assert inputs["mean_audio"].dtype == np.float32
        for row, video_id in enumerate(inputs["id"].astype(str)):
            seen.add(video_id)
            np.testing.assert_allclose(inputs["mean_rgb"][row], means[video_id][0], rtol=1e-6)
            np.testing.assert_allclose(inputs["mean_audio"][row], means[video_id][1], rtol=1e-6)
            assert np.flatnonzero(labels[row]).tolist() == sorted(LABELS[video_id])
    assert seen == set(LENGTHS)
