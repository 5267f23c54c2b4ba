"""features.streams: a stream's spec from a manifest and back into one."""

import json

from features import manifest, streams
from features.backbones import WeightsSource
from features.formats import BACKBONE_NAMES
from framevlad_proto import framevlad_pb2
from tests.features.test_manifest import FORMAT_1, write_json


def test_specs_from_a_format_1_manifest(tmp_path):
    read = manifest.read_manifest(write_json(tmp_path / "manifest.json", FORMAT_1))
    (spec,) = streams.specs_from_manifest(read, "gs://b/model")
    assert spec == streams.FeatureSpec(
        name="rgb",
        backbone="tiny",
        weights="random",
        seed=7,
        frame_size=(64, 64),
        fps=1.0,
        pca="gs://b/model/pca.npz",
        dims=16,
    )
    assert (spec.record_key, spec.mean_key) == ("rgb", "mean_rgb")


def test_weights_file_is_given_back_as_the_flag_would(tmp_path):
    with_file = json.loads(json.dumps(FORMAT_1))
    with_file["weights"] = {"kind": "path", "path": "/w/tiny.weights.h5", "sha256": "ab"}
    read = manifest.read_manifest(write_json(tmp_path / "manifest.json", with_file))
    (spec,) = streams.specs_from_manifest(read, str(tmp_path))
    assert spec.weights == "/w/tiny.weights.h5" and spec.pca == f"{tmp_path}/pca.npz"


def test_stream_info_round_trips_through_a_manifest(tmp_path):
    spec = streams.FeatureSpec("rgb", "tiny", "random", 3, (64, 64), 1.0, "fit", 16)
    pca = framevlad_pb2.PcaInfo(file="pca.npz", source="fit", input_dims=256, output_dims=16)
    info = streams.stream_info(spec, WeightsSource("random", seed=3), pca)
    written = framevlad_pb2.Manifest(fps=1.0, streams=[info])
    path = str(tmp_path / "manifest.json")
    manifest.write_manifest(path, written)
    (again,) = streams.specs_from_manifest(manifest.read_manifest(path), str(tmp_path))
    assert again == streams.FeatureSpec(
        "rgb", "tiny", "random", 3, (64, 64), 1.0, f"{tmp_path}/pca.npz", 16
    )


def test_backbone_names_are_the_registry():
    from features.backbones import BACKBONES

    assert tuple(BACKBONES) == BACKBONE_NAMES
