"""The product defaults end to end: InceptionV3 (random weights), 1024-d PCA. Minutes on CPU."""

import json

import numpy as np
import pytest

from pipelines import extract_features
from tests.extraction import frame_records, sample_videos

pytestmark = pytest.mark.slow


def test_inception_v3_defaults_end_to_end(tmp_path):
    library = tmp_path / "library"
    sample_videos(library, 4)
    output = tmp_path / "features"
    args = ["--input", str(library), "--output", str(output), "--weights", "random"]
    assert extract_features.main([*args, "--labels", str(library / "labels.csv")]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["backbone"] == "inception_v3" and manifest["pca"]["input_dims"] == 2048
    # ~30 sampled frames cannot span 1024 dimensions: the fit warns and stays finite.
    assert manifest["feature_sizes"]["rgb"] == 1024 and manifest["counts"]["ok"] == 4
    for record in frame_records(output):
        frames = record.features["rgb"]
        assert frames.shape[1] == 1024 and np.unique(frames).size > 16
