"""Builds `<output>/manifests/<run_id>.json`: what one run wrote and how to rebuild its
features. Reading a manifest is features.manifest.read_manifest's job, nobody else's."""

import datetime
import importlib.metadata

from features.formats import VOCABULARY_FILE
from features.labels import Vocabulary
from framevlad_proto import framevlad_pb2
from pipelines.config import ExtractConfig

FORMAT_VERSION = 2  # 2: streams and vocabulary info (format 1 readers use the top level)
_VERSIONED_PACKAGES = ("framevlad", "tensorflow", "keras", "apache-beam", "av", "numpy")
_COUNT_FIELDS = (
    "seen", "ok", "failed", "frames", "truncated", "unlabeled", "skipped",
    "labels_without_video", "conflicting_label_rows", "no_audio", "audio_truncated",
    "hw_decoded", "hw_decode_fallbacks",
)  # fmt: skip
_COUNT_MAPS = ("failed_by_reason", "skipped_extension")


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


def vocabulary_info(vocabulary: Vocabulary) -> framevlad_pb2.VocabularyInfo:
    """Size and hash of vocabulary.csv as this run leaves it ("" file: labels were indices)."""
    if not len(vocabulary):
        return framevlad_pb2.VocabularyInfo()
    return framevlad_pb2.VocabularyInfo(
        file=VOCABULARY_FILE, size=len(vocabulary), sha256=vocabulary.sha256()
    )


def fill_counts(counts: framevlad_pb2.Counts, values: dict[str, float]) -> None:
    """`values` holds plain names and `<map>/<key>` entries (failed_by_reason/not_a_video)."""
    for name in _COUNT_FIELDS:
        setattr(counts, name, values.get(name, 0))
    for key, value in values.items():
        map_name, slash, entry = key.partition("/")
        if slash and map_name in _COUNT_MAPS:
            getattr(counts, map_name)[entry] = value


def build_manifest(
    config: ExtractConfig,
    streams: tuple[framevlad_pb2.StreamInfo, ...],
    counts: dict[str, float],
    vocabulary: Vocabulary,
    written: dict[str, list[str]],
) -> framevlad_pb2.Manifest:
    """`streams` are the run's feature streams (the first is rgb, repeated at the top level
    for format-1 readers); `counts` also holds max_sample_error_s (a maximum); `written`
    maps frame_records / video_records / failed_records / ok_ids_files to absolute paths."""
    rgb = streams[0]
    manifest = framevlad_pb2.Manifest(
        format_version=FORMAT_VERSION,
        run_id=config.run_id,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        input=config.input_pattern,
        id_root=config.id_root,
        backbone=rgb.backbone,
        weights=rgb.weights,
        fps=config.rgb.fps,
        max_frames=config.max_frames,
        frame_height=rgb.frame_height,
        frame_width=rgb.frame_width,
        pca=rgb.pca,
        feature_sizes={stream.name: stream.dims for stream in streams},
        vocabulary_file=VOCABULARY_FILE if len(vocabulary) else "",
        num_classes=len(vocabulary),
        versions=package_versions(),
        streams=streams,
        vocabulary=vocabulary_info(vocabulary),
        decode_mode=config.rgb.decode,
        max_sample_error_s=counts.get("max_sample_error_s", 0.0),
        decode_device=config.rgb.decode_device,
        precision=config.rgb.precision,
    )
    fill_counts(manifest.counts, counts)
    for field, paths in written.items():
        getattr(manifest, field).extend(relative_to(config.output, paths))
    return manifest
