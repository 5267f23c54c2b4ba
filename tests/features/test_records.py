import numpy as np
import pytest
import tensorflow as tf

from features.formats import AUDIO_KEY, HAS_AUDIO_KEY, MEAN_AUDIO_KEY, MEAN_RGB_KEY, RGB_KEY
from features.records import (
    CorruptRecordError,
    FrameRecord,
    decode_frame_example,
    decode_video_example,
    encode_frame_example,
    encode_video_example,
    read_tfrecords,
)


def _frames(num_frames: int, dims: int, seed: int = 0) -> np.ndarray:
    """[T, D] uint8 random quantized frames."""
    return np.random.default_rng(seed).integers(0, 256, size=(num_frames, dims), dtype=np.uint8)


def test_frame_round_trip():
    rgb = _frames(17, 1024)
    record = decode_frame_example(encode_frame_example("vid_é1", [3, 0, 41], {RGB_KEY: rgb}))
    assert isinstance(record, FrameRecord)
    assert record.video_id == "vid_é1" and record.labels == [3, 0, 41]
    assert record.features[RGB_KEY].dtype == np.uint8
    np.testing.assert_array_equal(record.features[RGB_KEY], rgb)
    record.features[RGB_KEY][0, 0] = 1  # decoded arrays are writable


def test_rgb_and_audio_together():
    rgb, audio = _frames(9, 1024, seed=1), _frames(9, 128, seed=2)
    serialized = encode_frame_example("v", [], {RGB_KEY: rgb, AUDIO_KEY: audio})
    record = decode_frame_example(serialized, feature_names=(RGB_KEY, AUDIO_KEY))
    assert record.labels == []
    np.testing.assert_array_equal(record.features[RGB_KEY], rgb)
    np.testing.assert_array_equal(record.features[AUDIO_KEY], audio)


def test_has_audio_context_round_trips_in_both_levels_and_is_absent_by_default():
    rgb, audio = _frames(3, 8, seed=1), _frames(3, 4, seed=2)
    features = {RGB_KEY: rgb, AUDIO_KEY: audio}
    frame = encode_frame_example("v", [2], features, context={HAS_AUDIO_KEY: 0})
    assert decode_frame_example(frame).context == {HAS_AUDIO_KEY: 0}
    context, _ = tf.io.parse_single_sequence_example(
        frame,
        context_features={HAS_AUDIO_KEY: tf.io.FixedLenFeature([], tf.int64)},
        sequence_features={AUDIO_KEY: tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    assert int(context[HAS_AUDIO_KEY]) == 0
    means = {MEAN_RGB_KEY: np.ones(8), MEAN_AUDIO_KEY: np.zeros(4)}
    video = encode_video_example("v", [2], means, context={HAS_AUDIO_KEY: 1})
    record = decode_video_example(video, feature_names=(MEAN_RGB_KEY, MEAN_AUDIO_KEY))
    assert record.context == {HAS_AUDIO_KEY: 1} and record.labels == [2]
    # No context asked for: today's bytes, and nothing decoded.
    assert encode_frame_example("v", [2], features) == encode_frame_example(
        "v", [2], features, context=None
    )
    assert decode_frame_example(encode_frame_example("v", [2], features)).context == {}
    with pytest.raises(ValueError, match="context 'labels' clashes"):
        encode_video_example("v", [2], means, context={"labels": 1})


def test_frame_layout_matches_youtube8m_reader():
    # The YouTube-8M starter code's frame-level parse path.
    rgb = _frames(12, 1024, seed=3)
    serialized = encode_frame_example("abcd", [7, 9], {RGB_KEY: rgb})
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "id": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
        },
        sequence_features={"rgb": tf.io.FixedLenSequenceFeature([], dtype=tf.string)},
    )
    decoded = tf.reshape(tf.io.decode_raw(sequence["rgb"], tf.uint8), [-1, 1024])
    assert decoded.shape == (12, 1024)
    np.testing.assert_array_equal(decoded.numpy(), rgb)
    assert context["id"].numpy() == b"abcd"
    assert context["labels"].values.numpy().tolist() == [7, 9]


def test_empty_labels_parse_in_youtube8m_reader():
    serialized = encode_frame_example("x", [], {RGB_KEY: _frames(2, 4)})
    context, _ = tf.io.parse_single_sequence_example(
        serialized, context_features={"labels": tf.io.VarLenFeature(tf.int64)}
    )
    assert context["labels"].values.shape == (0,)


def test_video_round_trip_and_youtube8m_reader():
    mean_rgb = np.random.default_rng(4).normal(size=1024).astype(np.float32)
    serialized = encode_video_example("v1", [5], {MEAN_RGB_KEY: mean_rgb})
    record = decode_video_example(serialized)
    assert record.video_id == "v1" and record.labels == [5]
    assert record.features[MEAN_RGB_KEY].dtype == np.float32
    np.testing.assert_array_equal(record.features[MEAN_RGB_KEY], mean_rgb)

    parsed = tf.io.parse_single_example(
        serialized,
        features={
            "id": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
            "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
        },
    )
    np.testing.assert_array_equal(parsed["mean_rgb"].numpy(), mean_rgb)


def _legacy_sequence_example(rgb: np.ndarray) -> bytes:
    """A frame record as YouTube-8M's first release wrote it: context key `video_id`."""
    example = tf.train.SequenceExample()
    example.context.feature["video_id"].bytes_list.value.append(b"old_one")
    example.context.feature["labels"].int64_list.value.extend([1, 2])
    frames = example.feature_lists.feature_list["rgb"].feature
    for frame in rgb:
        frames.add().bytes_list.value.append(frame.tobytes())
    return example.SerializeToString()


def test_legacy_video_id_key_accepted():
    rgb = _frames(3, 1024)
    record = decode_frame_example(_legacy_sequence_example(rgb))
    assert record.video_id == "old_one" and record.labels == [1, 2]
    np.testing.assert_array_equal(record.features[RGB_KEY], rgb)

    example = tf.train.Example()
    example.features.feature["video_id"].bytes_list.value.append(b"old_two")
    example.features.feature["mean_rgb"].float_list.value.extend([0.5, -1.0])
    video = decode_video_example(example.SerializeToString())
    assert video.video_id == "old_two" and video.labels == []
    np.testing.assert_array_equal(video.features[MEAN_RGB_KEY], [0.5, -1.0])


def test_missing_feature_or_id_is_named():
    serialized = encode_frame_example("v", [1], {RGB_KEY: _frames(2, 8)})
    with pytest.raises(ValueError, match="'audio'"):
        decode_frame_example(serialized, feature_names=(RGB_KEY, AUDIO_KEY))
    with pytest.raises(ValueError, match="'mean_audio'"):
        decode_video_example(encode_video_example("v", [], {}), feature_names=("mean_audio",))
    with pytest.raises(ValueError, match="'video_id'"):
        decode_frame_example(tf.train.SequenceExample().SerializeToString())


def test_zero_frames_are_rejected_when_encoding():
    with pytest.raises(ValueError, match="zero frames"):
        encode_frame_example("empty", [], {RGB_KEY: np.zeros((0, 1024), np.uint8)})
    example = tf.train.SequenceExample()
    example.context.feature["id"].bytes_list.value.append(b"empty")
    example.feature_lists.feature_list["rgb"].SetInParent()
    record = decode_frame_example(example.SerializeToString())
    assert record.features[RGB_KEY].shape == (0, 0)


def test_encoder_rejects_bad_frames():
    with pytest.raises(ValueError, match="quantize first"):
        encode_frame_example("v", [], {RGB_KEY: np.zeros((2, 4), np.float32)})
    with pytest.raises(ValueError, match="frame count"):
        encode_frame_example("v", [], {RGB_KEY: _frames(2, 4), AUDIO_KEY: _frames(3, 2)})


def _write(path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def test_write_then_read_tfrecords(tmp_path):
    frames = [_frames(4, 1024, seed=s) for s in range(5)]
    records = [encode_frame_example(f"v{i}", [i], {RGB_KEY: rgb}) for i, rgb in enumerate(frames)]
    _write(tmp_path / "a.tfrecord", records[:3])
    _write(tmp_path / "b.tfrecord", records[3:])
    read = list(read_tfrecords([str(tmp_path / "a.tfrecord"), tmp_path / "b.tfrecord"]))
    assert read == records
    decoded = [decode_frame_example(record) for record in read]
    assert [record.video_id for record in decoded] == [f"v{i}" for i in range(5)]
    np.testing.assert_array_equal(decoded[4].features[RGB_KEY], frames[4])


def test_corrupt_or_missing_file_is_named(tmp_path):
    path = tmp_path / "broken.tfrecord"
    _write(path, [encode_frame_example(f"v{i}", [], {RGB_KEY: _frames(3, 64)}) for i in range(2)])
    path.write_bytes(path.read_bytes()[:-20])  # truncate the second record
    records = read_tfrecords([str(path)])
    assert decode_frame_example(next(records)).video_id == "v0"
    with pytest.raises(CorruptRecordError, match="broken.tfrecord"):
        next(records)

    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"\x07" * 64)
    with pytest.raises(CorruptRecordError, match="garbage.tfrecord"):
        list(read_tfrecords([str(garbage)]))
    with pytest.raises(FileNotFoundError, match="absent.tfrecord"):
        list(read_tfrecords([str(tmp_path / "absent.tfrecord")]))


@pytest.mark.parametrize("video_id", ["x\ny", 'tab\there "quoted"', "caf\udce9-latin1-byte"])
def test_any_path_id_round_trips(video_id):
    """Ids are paths; one with a byte that is not UTF-8 (surrogate-escaped by os) is stored
    as its original bytes and read back as the same str."""
    frames = np.zeros((1, 4), np.uint8)
    frame = decode_frame_example(encode_frame_example(video_id, [1], {RGB_KEY: frames}))
    means = {MEAN_RGB_KEY: np.zeros(4, np.float32)}
    video = decode_video_example(encode_video_example(video_id, [], means))
    assert frame.video_id == video.video_id == video_id
