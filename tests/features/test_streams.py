"""features.streams: a stream's spec from a manifest and back into one."""

import json

from features import manifest, streams
from features.backbones import WeightsSource
from features.formats import AUDIO_PCA_FILE, BACKBONE_NAMES
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


def test_rgb_and_audio_streams_round_trip_through_a_manifest(tmp_path):
    """Both streams come back as extract_features built them; audio_pca.npz is referenced."""
    rgb = streams.FeatureSpec("rgb", "tiny", "random", 3, (64, 64), 1.0, "fit", 16)
    audio = streams.audio_spec(weights="vggish", seed=3, fps=1.0, pca="fit")
    assert audio.pca_file == AUDIO_PCA_FILE and rgb.pca_file == "pca.npz"
    assert (audio.record_key, audio.mean_key) == ("audio", "mean_audio")
    assert audio.flag("--pca") == "--audio_pca" and rgb.flag("--pca") == "--pca"
    vggish = WeightsSource("vggish", path="/k/models/vggish.weights.h5", sha256="cd")
    infos = [
        streams.stream_info(spec, weights, pca)
        for spec, weights, pca in (
            (rgb, WeightsSource("random", seed=3), pca_info("pca.npz", 256, 16)),
            (audio, vggish, pca_info(AUDIO_PCA_FILE, 128, 128)),
        )
    ]
    written = framevlad_pb2.Manifest(fps=1.0, streams=infos)
    written.vocabulary.file = "vocabulary.csv"
    path = str(tmp_path / "manifest.json")
    manifest.write_manifest(path, written)
    read = manifest.read_manifest(path)
    assert [stream.name for stream in read.streams] == ["rgb", "audio"]
    (_, audio_info) = read.streams
    assert audio_info.backbone == "vggish" and audio_info.weights.kind == "vggish"
    assert (audio_info.frame_height, audio_info.frame_width) == (96, 64)
    assert audio_info.pca.file == AUDIO_PCA_FILE and audio_info.dims == 128
    again = streams.specs_from_manifest(read, str(tmp_path))
    assert again == (
        streams.FeatureSpec("rgb", "tiny", "random", 3, (64, 64), 1.0, f"{tmp_path}/pca.npz", 16),
        streams.FeatureSpec(
            "audio", "vggish", "vggish", 0, (96, 64), 1.0, f"{tmp_path}/{AUDIO_PCA_FILE}", 128
        ),
    )
    assert manifest.referenced_files(read) == [AUDIO_PCA_FILE, "pca.npz", "vocabulary.csv"]


def pca_info(file: str, input_dims: int, output_dims: int) -> framevlad_pb2.PcaInfo:
    return framevlad_pb2.PcaInfo(
        file=file, source="fit", input_dims=input_dims, output_dims=output_dims
    )
