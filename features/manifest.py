"""`manifest.json`: read once, into the proto message, by this module only.

The manifest says how an output's features were computed; a reader that guessed a missing
backbone, PCA or frame rate would compute other features without a word, so the fields that
decide the features are required here and a missing one is a one-line ManifestError naming
the file and the field. Fields newer writers add are ignored; manifests of format 1 (no
`streams`) read as one rgb stream built from their top-level fields.
"""

import json

from google.protobuf import json_format

from features import storage
from features.cli import UsageError
from features.formats import MANIFEST_FILE, RGB_KEY
from features.video_ids import id_root_of
from framevlad_proto import framevlad_pb2

WEIGHT_KINDS = ("imagenet", "vggish", "random", "path")
_FIX = "rerun extract_features into a fresh --output, or restore the file from a copy"


class ManifestError(UsageError):
    """A manifest.json that cannot be read or lacks a field that decides the features."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(what, path, _FIX)


def read_manifest(path: str) -> framevlad_pb2.Manifest:
    """Parses and checks `path` (local or gs://); OSError when it cannot be read."""
    try:
        manifest = json_format.Parse(
            storage.read_bytes(path), framevlad_pb2.Manifest(), ignore_unknown_fields=True
        )
    except (json_format.ParseError, UnicodeDecodeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ManifestError(path, f"not a valid manifest: {first_line}") from None
    legacy = not manifest.streams
    if legacy:
        manifest.streams.append(_legacy_rgb_stream(manifest))
    _check(manifest, path, legacy)
    return manifest


def _legacy_rgb_stream(manifest: framevlad_pb2.Manifest) -> framevlad_pb2.StreamInfo:
    """Format 1 kept its one stream (rgb) in the top-level fields."""
    stream = framevlad_pb2.StreamInfo(
        name=RGB_KEY,
        backbone=manifest.backbone,
        frame_height=manifest.frame_height,
        frame_width=manifest.frame_width,
        dims=manifest.pca.output_dims,
    )
    if manifest.HasField("weights"):
        stream.weights.CopyFrom(manifest.weights)
    if manifest.HasField("pca"):
        stream.pca.CopyFrom(manifest.pca)
    return stream


def _check(manifest: framevlad_pb2.Manifest, path: str, legacy: bool) -> None:
    def require(ok: bool, field: str, what: str = "no") -> None:
        if not ok:
            raise ManifestError(path, f"{what} {field}")

    require(manifest.fps > 0, "fps", "no positive")
    for index, stream in enumerate(manifest.streams):
        prefix = "" if legacy else f"streams[{index}]."
        require(bool(stream.name), f"{prefix}name")
        require(bool(stream.backbone), f"{prefix}backbone")
        require(stream.weights.kind in WEIGHT_KINDS, f"{prefix}weights.kind", "no valid")
        if stream.weights.kind == "path":
            require(bool(stream.weights.path), f"{prefix}weights.path")
        require(stream.frame_height > 0, f"{prefix}frame_height")
        require(stream.frame_width > 0, f"{prefix}frame_width")
        require(bool(stream.pca.file), f"{prefix}pca.file")
        require(stream.pca.output_dims > 0, f"{prefix}pca.output_dims")
        if not legacy:
            require(stream.dims == stream.pca.output_dims, f"{prefix}dims", "no matching")


def manifest_to_json(manifest: framevlad_pb2.Manifest) -> str:
    """Every field spelled out (zeros too), keys sorted: people and diffs read it."""
    as_dict = json_format.MessageToDict(
        manifest, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, indent=2, sort_keys=True) + "\n"


def write_manifest(path: str, manifest: framevlad_pb2.Manifest) -> None:
    """Writes it whole or not at all (a manifest is a commit marker)."""
    storage.write_text(path, manifest_to_json(manifest))


def _parent(folder: str) -> str | None:
    """The folder above, or None at the top (`/`, or a gs:// bucket)."""
    head = folder.rstrip("/").rsplit("/", 1)[0]
    if storage.is_remote(folder):
        return head if head.count("/") >= 2 and not head.endswith(":/") else None
    return (head or "/") if folder not in ("", "/") else None


def find_manifest(data_pattern: str, max_levels: int = 3) -> str | None:
    """The manifest.json in the data's folder or one of its `max_levels` parents
    (`out/frame/*.tfrecord` -> `out/manifest.json`); its path or URL, nothing staged."""
    pattern = storage.absolute(data_pattern)
    folder: str | None = pattern if storage.is_dir(pattern) else id_root_of(pattern)
    for _ in range(max_levels + 1):
        if folder is None:
            break
        candidate = storage.join(folder, MANIFEST_FILE)
        if storage.exists(candidate) and not storage.is_dir(candidate):
            return candidate
        folder = _parent(folder)
    return None


def referenced_files(manifest: framevlad_pb2.Manifest) -> list[str]:
    """Files beside a manifest that rebuilding its features needs (relative names)."""
    files = {stream.pca.file for stream in manifest.streams if stream.pca.file}
    if not manifest.streams and manifest.pca.file:
        files.add(manifest.pca.file)
    vocabulary = manifest.vocabulary.file or manifest.vocabulary_file
    if vocabulary:
        files.add(vocabulary)
    return sorted(files)
