"""The flow, i3d, c3d and fovea streams through the Beam job: one decode pass per video, one
row per rgb row in every stream (variable frame rate, 1-frame and 0.2 s videos too), each
stream's own PCA and manifest entry, and tag_videos rebuilding exactly a model's streams."""

import json

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from features.formats import C3D_BACKBONE
from features.pca import fit_pca
from features.streams import FeatureSpec
from features.synthetic_video import render_index_frame, write_video
from pipelines import decode_embed, tag_videos
from pipelines.decode_embed import DecodeAndEmbed
from pipelines.elements import VideoInput
from pooling_models import train_pool
from tests.extraction import extract, frame_records, sample_videos

# c3d (1.7 s a clip on a CPU) is tested on two short videos below, not in this library.
MOTION_STREAMS = "rgb,flow,i3d,fovea"
RANDOM_WEIGHTS = (
    "--flow_weights", "random", "--i3d_weights", "random",
    "--flow_pca_dims", "8", "--i3d_pca_dims", "8",
    "--fovea_pca_dims", "8", "--pca_dims", "8",
)  # fmt: skip
VFR_TIMES = [0.0, 0.1, 0.15, 0.9, 1.7, 2.0, 2.95, 3.3]


def _write(path, count, **kwargs):
    write_video(str(path), (render_index_frame(i, 48, 64) for i in range(count)), **kwargs)


@pytest.fixture(scope="module")
def motion_output(tmp_path_factory):
    """A small library with odd videos, extracted with every picture stream (tiny networks)."""
    root = tmp_path_factory.mktemp("motion")
    library = sample_videos(root / "library", 2)
    odd = library / "odd"
    odd.mkdir()
    _write(odd / "vfr.mp4", len(VFR_TIMES), timestamps_s=VFR_TIMES)
    _write(odd / "one_frame.mp4", 1)
    _write(odd / "short.mp4", 6, fps=30.0)  # 0.2 s
    flags = ("--streams", MOTION_STREAMS, "--labels_from_folders", *RANDOM_WEIGHTS)
    return extract(library, root / "features", *flags)


def test_every_stream_has_one_row_per_rgb_row(motion_output):
    rows = {
        record.video_id: {name: len(values) for name, values in record.features.items()}
        for record in frame_records(motion_output.output)
    }
    assert {"odd/vfr", "odd/one_frame", "odd/short"} <= set(rows)
    assert motion_output.failures == []
    for video_id, counts in rows.items():
        assert set(counts) == set(MOTION_STREAMS.split(",")), video_id
        assert len(set(counts.values())) == 1, (video_id, counts)
    assert rows["odd/vfr"]["rgb"] == 4 and rows["odd/one_frame"]["rgb"] == 1
    assert rows["odd/short"]["rgb"] == 1


def test_each_stream_has_its_own_pca_and_manifest_entry(motion_output):
    streams = {stream["name"]: stream for stream in motion_output.manifest["streams"]}
    assert list(streams) == MOTION_STREAMS.split(",")
    assert streams["flow"]["backbone"] == streams["i3d"]["backbone"] == "tiny"
    for name in ("flow", "i3d", "fovea"):
        assert streams[name]["weights"]["kind"] == "random"
        assert streams[name]["pca"]["file"] == f"{name}_pca.npz"
        assert (motion_output.output / f"{name}_pca.npz").is_file()
        assert streams[name]["dims"] == 8
    sizes = motion_output.manifest["feature_sizes"]
    assert sizes == {name: 8 for name in MOTION_STREAMS.split(",")}


def test_streams_carry_information_of_their_own(motion_output):
    """Not copies of rgb: each stream's rows differ from rgb's and vary within a video."""
    (record,) = [r for r in frame_records(motion_output.output) if r.video_id == "odd/vfr"]
    for name in ("flow", "i3d", "fovea"):
        values = np.asarray(record.features[name])
        assert not np.array_equal(values, np.asarray(record.features["rgb"])), name
        assert len(np.unique(values, axis=0)) > 1, name


def test_all_streams_come_from_one_open_per_video(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    specs = [
        FeatureSpec("rgb", "tiny", "random", 0, (64, 64), 1.0, "fit", 4),
        FeatureSpec("flow", "tiny", "random", 0, (64, 64), 1.0, "fit", 4),
        FeatureSpec("i3d", "tiny", "random", 0, (64, 64), 1.0, "fit", 4),
        FeatureSpec("fovea", "tiny", "random", 0, (64, 64), 1.0, "fit", 4),
        FeatureSpec("c3d", C3D_BACKBONE, "random", 0, (112, 112), 1.0, "fit", 4),
    ]
    pca_paths = {}
    for spec in specs:
        pca_paths[spec.name] = str(tmp_path / spec.pca_file)
        width = 4096 if spec.name == "c3d" else 256
        fit_pca(rng.normal(size=(32, width)).astype(np.float32), 4).save(pca_paths[spec.name])
    paths = {name: str(tmp_path / f"{name}.mp4") for name in ("a", "b")}
    _write(paths["a"], 75)
    _write(paths["b"], 40, fps=20.0)
    opened = []
    open_read = decode_embed.storage.open_read

    def counting_open(path, *args, **kwargs):
        opened.append(path)
        return open_read(path, *args, **kwargs)

    monkeypatch.setattr(decode_embed.storage, "open_read", counting_open)
    with TestPipeline() as pipeline:
        embedded, failures = (
            pipeline
            | beam.Create([VideoInput(name, path, (), False) for name, path in paths.items()])
            | DecodeAndEmbed(specs, pca_paths, frames_per_batch=4, max_frames=0)
        )
        shapes = embedded | beam.Map(
            lambda video: (
                video.video.video_id,
                sorted((name, rows.shape) for name, rows in video.features.items()),
            )
        )
        names = ("c3d", "flow", "fovea", "i3d", "rgb")
        expected = [
            ("a", [(name, (3, 4)) for name in names]),
            ("b", [(name, (2, 4)) for name in names]),
        ]
        assert_that(shapes, equal_to(expected), "shapes")
        assert_that(failures, equal_to([]), "failures")
    assert sorted(opened) == sorted(paths.values())


def test_tag_videos_rebuilds_a_motion_models_streams(motion_output, tmp_path):
    """A model pooling rgb, flow and i3d tags raw videos from exactly those streams, as its
    records would be tagged (the same top labels and scores)."""
    frames = str(motion_output.output / "frame/*.tfrecord")
    model = tmp_path / "model"
    args = ["--train_data", frames, "--output", str(model), "--epochs", "1"]
    args += ["--feature_names", "rgb,flow,i3d", "--cluster_size", "2", "--hidden_size", "8"]
    assert train_pool.main([*args, "--batch_size", "4"]) == 0
    tags = {}
    for kind, source in (("raw", motion_output.library), ("records", frames)):
        output = tmp_path / kind
        flags = ["--model", str(model), "--input", str(source), "--output", str(output)]
        assert tag_videos.main([*flags, "--frames_per_batch", "16"]) == 0
        tags[kind] = pd.read_parquet(output / "tags.parquet").sort_values(["id", "rank"])
    manifest = json.loads((model / "manifest.json").read_text())
    assert [stream["name"] for stream in manifest["streams"]] == MOTION_STREAMS.split(",")
    raw, records = tags["raw"], tags["records"]
    assert list(raw["id"]) == list(records["id"]) and len(raw) > 0
    assert list(raw["label_index"]) == list(records["label_index"])
    assert np.abs(raw["score"].to_numpy() - records["score"].to_numpy()).max() <= 1e-3
