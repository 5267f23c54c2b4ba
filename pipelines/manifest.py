"""`<output>/manifest.json`: what an output holds and how to rebuild its features."""

import datetime
import importlib.metadata
import json

from google.protobuf import json_format

from features.backbones import WeightsSource
from features.formats import PCA_FILE, RGB_KEY, VOCABULARY_FILE
from features.labels import Vocabulary
from framevlad_proto import framevlad_pb2
from pipelines import storage
from pipelines.config import ExtractConfig

FORMAT_VERSION = 1
_VERSIONED_PACKAGES = ("framevlad", "tensorflow", "keras", "apache-beam", "av", "numpy")


def package_versions() -> dict[str, str]:
    versions = {}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            if package == "tensorflow":  # installed as tensorflow-cpu by the [cpu] extra
                versions[package] = importlib.metadata.version("tensorflow-cpu")
    return versions


def relative_to(output: str, paths: list[str]) -> list[str]:
    prefix = output.rstrip("/") + "/"
    return sorted(path[len(prefix) :] if path.startswith(prefix) else path for path in paths)


def build_manifest(
    config: ExtractConfig,
    weights: WeightsSource,
    frame_size: tuple[int, int],
    pca_dims: tuple[int, int],
    pca_epsilon: float,
    pca_source: str,
    pca_sample_frames: int,
    pca_sha256: str,
    counts: dict[str, int],
    vocabulary: Vocabulary,
    written: dict[str, list[str]],
) -> framevlad_pb2.Manifest:
    """`pca_dims` is (input, output); `written` maps frame_records / video_records /
    failed_records / ok_ids_files to absolute paths."""
    manifest = framevlad_pb2.Manifest(
        format_version=FORMAT_VERSION,
        run_id=config.run_id,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        input=config.input_pattern,
        id_root=config.id_root,
        backbone=config.backbone,
        weights=framevlad_pb2.WeightsSource(
            kind=weights.kind, path=weights.path, sha256=weights.sha256, seed=weights.seed or 0
        ),
        fps=config.fps,
        max_frames=config.max_frames,
        frame_height=frame_size[0],
        frame_width=frame_size[1],
        pca=framevlad_pb2.PcaInfo(
            file=PCA_FILE,
            source=pca_source,
            input_dims=pca_dims[0],
            output_dims=pca_dims[1],
            epsilon=pca_epsilon,
            sample_frames=pca_sample_frames,
            sha256=pca_sha256,
        ),
        feature_sizes={RGB_KEY: pca_dims[1]},
        vocabulary_file=VOCABULARY_FILE if len(vocabulary) else "",
        num_classes=len(vocabulary),
        versions=package_versions(),
    )
    for field in ("seen", "ok", "failed", "frames", "truncated", "unlabeled", "skipped"):
        setattr(manifest.counts, field, counts.get(field, 0))
    manifest.counts.labels_without_video = counts.get("labels_without_video", 0)
    prefix = "failed_by_reason/"
    for key, value in counts.items():
        if key.startswith(prefix):
            manifest.counts.failed_by_reason[key[len(prefix) :]] = value
    for field, paths in written.items():
        getattr(manifest, field).extend(relative_to(config.output, paths))
    return manifest


def manifest_to_json(manifest: framevlad_pb2.Manifest) -> str:
    as_dict = json_format.MessageToDict(
        manifest, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, indent=2, sort_keys=True) + "\n"


def read_manifest(path: str) -> framevlad_pb2.Manifest:
    """Reads a manifest.json; unknown fields from newer writers are ignored."""
    return json_format.Parse(
        storage.read_bytes(path), framevlad_pb2.Manifest(), ignore_unknown_fields=True
    )
