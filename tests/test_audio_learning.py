"""Audio is used: on a library whose classes differ only by sound (a tone vs white noise over
the same kind of picture), extracted with the default streams, an rgb+audio NetVLAD tells
held-out videos apart and an rgb-only one cannot.

Slow (a few minutes on 2 cores): one extraction of a 96-clip library (tiny rgb backbone and
VGGish, both with seeded random weights) and two trainings. Held-out videos are train_pool's
hash hold-out of the records, never trained on.
"""

import json

import pytest

from features.sample_library import LABELS_FILE, SOUND_CLASSES, make_sample_library
from pipelines import extract_features
from pooling_models import model_dir, train_pool

pytestmark = pytest.mark.slow

VIDEOS = 96
SECONDS = 3.0
SEED = 0


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    library = tmp_path_factory.mktemp("sound_library")
    make_sample_library(str(library), VIDEOS, seed=SEED, seconds=SECONDS, classes=SOUND_CLASSES)
    output = tmp_path_factory.mktemp("sound_features")
    args = [
        "--input", str(library), "--output", str(output), "--labels", str(library / LABELS_FILE),
        "--backbone", "tiny", "--weights", "random", "--audio_weights", "random",
        "--pca_dims", "32", "--seed", str(SEED),
    ]  # fmt: skip
    assert extract_features.main(args) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert [stream["name"] for stream in manifest["streams"]] == ["rgb", "audio"]
    return output


def train(features, output, *flags: str) -> tuple[dict, dict]:
    """Trains a NetVLAD model; returns its hold-out metrics and its model config."""
    args = [
        "--train_data", str(features / "frame/*.tfrecord"), "--output", str(output),
        "--pooling", "netvlad", "--cluster_size", "8", "--hidden_size", "32",
        "--batch_size", "4", "--learning_rate", "3e-2", "--epochs", "30", "--patience", "30",
        "--eval_fraction", "0.3", "--seed", str(SEED), *flags,
    ]  # fmt: skip
    assert train_pool.main(args) == 0
    metrics = json.loads((output / model_dir.METRICS_FILE).read_text())
    config = json.loads((output / model_dir.TRAIN_CONFIG_FILE).read_text())["model"]
    return metrics, config


def test_rgb_and_audio_hear_what_rgb_alone_cannot_see(features, tmp_path):
    both, config = train(features, tmp_path / "rgb_audio")  # the manifest's streams: both
    assert config["feature_names"] == ["rgb", "audio"]
    rgb, config = train(features, tmp_path / "rgb", "--feature_names", "rgb")
    assert config["feature_names"] == ["rgb"]
    assert both["num_videos"] == rgb["num_videos"] >= 20
    assert both["hit_at_1"] >= 0.9, both
    assert rgb["hit_at_1"] <= 0.75, rgb  # two classes: chance is 0.5
