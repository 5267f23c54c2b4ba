"""Motion is used: on a library whose two classes differ only in the direction of motion (one
blob texture sliding right, and the very same frames played backwards), a flow NetVLAD tells
held-out videos apart and an rgb-only one cannot.

Slow (about 90 s on 2 shared cores: 40 s extracting, 50 s training and evaluating): three
small extractions with the tiny backbone (rgb and flow networks with seeded random weights),
two short trainings and their evaluations. Three libraries with seeds of their own: train,
validation (train_pool's --eval_data: early stopping and the best epoch) and held-out (scored
by eval_pool, chose nothing), the last two extracted with the train output's PCAs and
vocabulary as `make demo` does. A hash hold-out of the train records instead would be a few
videos on which GAP saturates at the first epoch that ranks them right, and that
under-trained epoch is the one kept.
"""

import json
from pathlib import Path

import pytest

from features.sample_library import LABELS_FILE, MOTION_CLASSES, make_sample_library
from pipelines import extract_features
from pooling_models import eval_pool, train_pool

pytestmark = pytest.mark.slow

TRAIN_VIDEOS = 32
VALIDATION_VIDEOS = 16
HELDOUT_VIDEOS = 24
SECONDS = 2.0  # 1.5-2.5 s: two or three 1 fps rows a video
# Whitening gives every PCA dimension unit variance and the direction of motion lies in the
# first, so each further dimension is as loud as the signal: 8 keeps 32 videos enough.
PCA_DIMS = "8"
SEED = 0


def extract(tmp_path_factory, name: str, seed: int, videos: int, *flags: str) -> Path:
    """A drift library of `videos` clips extracted with rgb and flow; returns the output."""
    library = tmp_path_factory.mktemp(f"{name}_library")
    make_sample_library(str(library), videos, seed=seed, seconds=SECONDS, classes=MOTION_CLASSES)
    output = tmp_path_factory.mktemp(f"{name}_features")
    args = [
        "--input", str(library), "--output", str(output), "--labels", str(library / LABELS_FILE),
        "--streams", "rgb,flow", "--backbone", "tiny", "--weights", "random",
        "--flow_weights", "random", "--seed", str(SEED), "--frames_per_batch", "16", *flags,
    ]  # fmt: skip
    assert extract_features.main(args) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert [stream["name"] for stream in manifest["streams"]] == ["rgb", "flow"]
    assert manifest["counts"]["ok"] == videos, manifest["counts"]
    return output


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> dict[str, Path]:
    """Outputs by role; validation and held-out rows live in the train output's spaces."""
    train = extract(
        tmp_path_factory, "train", SEED, TRAIN_VIDEOS, "--pca_dims", PCA_DIMS,
        "--flow_pca_dims", PCA_DIMS,
    )  # fmt: skip
    reuse = (
        "--pca", str(train / "pca.npz"), "--flow_pca", str(train / "flow_pca.npz"),
        "--vocabulary", str(train / "vocabulary.csv"),
    )  # fmt: skip
    validation = extract(tmp_path_factory, "validation", SEED + 1, VALIDATION_VIDEOS, *reuse)
    heldout = extract(tmp_path_factory, "heldout", SEED + 2, HELDOUT_VIDEOS, *reuse)
    return {"train": train, "validation": validation, "heldout": heldout}


def train_and_evaluate(features: dict[str, Path], model: Path, stream: str) -> dict:
    """A NetVLAD model over one stream; returns its metrics on the held-out library."""
    args = [
        "--train_data", str(features["train"] / "frame/*.tfrecord"), "--output", str(model),
        "--eval_data", str(features["validation"] / "frame/*.tfrecord"),
        "--feature_names", stream, "--pooling", "netvlad", "--cluster_size", "8",
        "--hidden_size", "32", "--batch_size", "4", "--learning_rate", "3e-2",
        "--epochs", "30", "--patience", "8", "--seed", str(SEED),
    ]  # fmt: skip
    assert train_pool.main(args) == 0
    metrics = model / "heldout_metrics.json"
    heldout = str(features["heldout"] / "frame/*.tfrecord")
    args = ["--model", str(model), "--eval_data", heldout, "--metrics_output", str(metrics)]
    assert eval_pool.main(args) == 0
    return json.loads(metrics.read_text())


def test_flow_sees_the_direction_rgb_cannot(features, tmp_path):
    flow = train_and_evaluate(features, tmp_path / "flow", "flow")
    rgb = train_and_evaluate(features, tmp_path / "rgb", "rgb")
    assert flow["num_videos"] == rgb["num_videos"] == HELDOUT_VIDEOS
    assert flow["hit_at_1"] >= 0.9, flow
    # Two balanced classes: chance is 0.5. A model with no signal, right or wrong per video by
    # a fair coin, scores above 0.75 (19 of 24 or more) with probability 0.3 %; a model that
    # saw the direction at all scores like flow's.
    assert rgb["hit_at_1"] <= 0.75, rgb
