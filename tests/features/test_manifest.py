"""features.manifest: parsed once into the proto, legacy manifests read, missing fields named."""

import json

import pytest

from features import manifest, storage
from features.cli import UsageError
from framevlad_proto import framevlad_pb2

# What extract_features wrote before streams existed (format 1), trimmed to what matters.
FORMAT_1 = {
    "format_version": 1,
    "run_id": "20250101-000000-abcd",
    "input": "/lib",
    "id_root": "/lib",
    "backbone": "tiny",
    "weights": {"kind": "random", "path": "", "sha256": "", "seed": 7},
    "fps": 1.0,
    "max_frames": 300,
    "frame_height": 64,
    "frame_width": 64,
    "pca": {"file": "pca.npz", "source": "fit", "input_dims": 256, "output_dims": 16},
    "feature_sizes": {"rgb": 16},
    "vocabulary_file": "vocabulary.csv",
    "num_classes": 3,
    "counts": {"seen": 4, "ok": 4},
    "ok_ids_files": ["manifests/20250101-000000-abcd-ids-00000-of-00001.txt"],
    "a_field_from_the_future": {"x": 1},
}


def write_json(path, value: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return str(path)


def test_format_1_manifest_reads_as_one_rgb_stream(tmp_path):
    read = manifest.read_manifest(write_json(tmp_path / "manifest.json", FORMAT_1))
    (stream,) = read.streams
    assert stream.name == "rgb" and stream.backbone == "tiny" and stream.dims == 16
    assert (stream.frame_height, stream.frame_width) == (64, 64)
    assert stream.weights.kind == "random" and stream.weights.seed == 7
    assert stream.pca.file == "pca.npz" and read.fps == 1.0 and read.counts.ok == 4
    assert manifest.referenced_files(read) == ["pca.npz", "vocabulary.csv"]


def two_stream_manifest() -> framevlad_pb2.Manifest:
    written = framevlad_pb2.Manifest(format_version=2, fps=2.0, backbone="tiny")
    for name, dims in (("rgb", 16), ("flow", 8)):
        stream = written.streams.add(
            name=name, backbone="tiny", frame_height=64, frame_width=64, dims=dims
        )
        stream.weights.kind = "random"
        stream.pca.file, stream.pca.output_dims = f"pca_{name}.npz", dims
    written.vocabulary.file = "vocabulary.csv"
    return written


def test_round_trip_through_json(tmp_path):
    path = str(tmp_path / "out" / "manifest.json")
    manifest.write_manifest(path, two_stream_manifest())
    assert manifest.read_manifest(path) == two_stream_manifest()
    assert json.loads(storage.read_text(path))["streams"][1]["name"] == "flow"
    referenced = manifest.referenced_files(two_stream_manifest())
    assert referenced == ["pca_flow.npz", "pca_rgb.npz", "vocabulary.csv"]


@pytest.mark.parametrize(
    ("drop", "field"),
    [
        (("backbone",), "backbone"),
        (("fps",), "fps"),
        (("pca", "output_dims"), "pca.output_dims"),
        (("weights",), "weights.kind"),
        (("frame_width",), "frame_width"),
    ],
)
def test_a_missing_field_that_decides_the_features_is_named(tmp_path, drop, field):
    damaged = json.loads(json.dumps(FORMAT_1))
    holder = damaged
    for key in drop[:-1]:
        holder = holder[key]
    del holder[drop[-1]]
    path = write_json(tmp_path / "manifest.json", damaged)
    with pytest.raises(manifest.ManifestError) as raised:
        manifest.read_manifest(path)
    message = str(raised.value)
    assert isinstance(raised.value, UsageError) and "\n" not in message
    assert message.startswith("no ") and f"{field} ({path}):" in message


def test_a_stream_field_is_named_with_its_stream(tmp_path):
    damaged = two_stream_manifest()
    damaged.streams[1].pca.output_dims = 0
    path = str(tmp_path / "manifest.json")
    manifest.write_manifest(path, damaged)
    with pytest.raises(manifest.ManifestError, match=r"streams\[1\]\.pca\.output_dims"):
        manifest.read_manifest(path)


def test_a_torn_manifest_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(FORMAT_1)[:40])
    with pytest.raises(manifest.ManifestError, match="not a valid manifest") as raised:
        manifest.read_manifest(str(path))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_find_manifest_looks_in_the_data_folder_and_its_parents(tmp_path):
    write_json(tmp_path / "out" / "manifest.json", FORMAT_1)
    (tmp_path / "out" / "frame").mkdir()
    found = str(tmp_path / "out" / "manifest.json")
    assert manifest.find_manifest(f"{tmp_path}/out/frame/*.tfrecord") == found
    assert manifest.find_manifest(f"{tmp_path}/out/frame") == found
    assert manifest.find_manifest(f"{tmp_path}/out") == found
    assert manifest.find_manifest(f"{tmp_path}/elsewhere/*.tfrecord") is None


def test_find_and_read_a_manifest_in_a_bucket(gcs_bucket):
    storage.write_text(f"{gcs_bucket}/m/out/manifest.json", json.dumps(FORMAT_1))
    found = manifest.find_manifest(f"{gcs_bucket}/m/out/frame/*.tfrecord")
    assert found == f"{gcs_bucket}/m/out/manifest.json"
    assert manifest.read_manifest(found).streams[0].backbone == "tiny"
    assert manifest.find_manifest(f"{gcs_bucket}/m/other/frame/*.tfrecord") is None
