"""Labels found in records, for when neither a flag nor a vocabulary gives the class count."""

import tensorflow as tf

from features.formats import LABELS_KEY
from features.records import read_tfrecords


def largest_label(file_pattern: str, data_level: str) -> int:
    """The largest label index in the matched frame- or video-level records (-1 if none)."""
    paths = sorted(tf.io.gfile.glob(file_pattern))
    if not paths:
        raise FileNotFoundError(f"{file_pattern}: no TFRecord files matched")
    largest = -1
    for serialized in read_tfrecords(paths):
        if data_level == "frame":
            features = tf.train.SequenceExample.FromString(serialized).context.feature
        else:
            features = tf.train.Example.FromString(serialized).features.feature
        labels = features[LABELS_KEY].int64_list.value if LABELS_KEY in features else []
        largest = max([largest, *labels])
    return largest
