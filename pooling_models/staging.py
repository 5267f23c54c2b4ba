"""gs:// for the trainers and the tagger: stage objects to local files and back.

TensorFlow's own gs:// client cannot be pointed at a GCS emulator, so the paths tested here
copy through google-cloud-storage (which honours STORAGE_EMULATOR_HOST); against real GCS the
same code runs unchanged. Record globs are staged whole before training: the data is read
every epoch, so one download beats streaming it again each time.
"""

import fnmatch
import os
import tempfile

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def gcs_client():  # -> google.cloud.storage.Client; imported only when gs:// is used
    """Anonymous when STORAGE_EMULATOR_HOST points at an emulator, else default credentials."""
    from google.cloud import storage

    if os.environ.get(EMULATOR_ENV):
        return storage.Client.create_anonymous_client()
    return storage.Client()


def _split(url: str) -> tuple[str, str]:
    bucket, _, name = url.removeprefix("gs://").partition("/")
    return bucket, name


def _literal_prefix(pattern: str) -> str:
    cut = min((pattern.find(char) for char in "*?[" if char in pattern), default=len(pattern))
    return pattern[:cut]


def matching_names(pattern: str) -> list[str]:
    """Object names in the pattern's bucket that match its glob (`*` crosses no `/`)."""
    bucket, name_pattern = _split(pattern)
    blobs = gcs_client().list_blobs(bucket, prefix=_literal_prefix(name_pattern))
    names = [blob.name for blob in blobs]
    depth = name_pattern.count("/")
    return sorted(
        name for name in names if name.count("/") == depth and fnmatch.fnmatch(name, name_pattern)
    )


def download(url: str, local_path: str) -> None:
    bucket, name = _split(url)
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    gcs_client().bucket(bucket).blob(name).download_to_filename(local_path)


def exists(url: str) -> bool:
    bucket, name = _split(url)
    return gcs_client().bucket(bucket).blob(name).exists()


def stage_glob(pattern: str) -> str:
    """A local glob over copies of the matched objects (the pattern itself when local)."""
    if not is_gcs(pattern):
        return pattern
    names = matching_names(pattern)
    if not names:
        raise FileNotFoundError(f"{pattern}: no objects matched")
    local_dir = tempfile.mkdtemp(prefix="framevlad-records-")
    bucket, _ = _split(pattern)
    for index, name in enumerate(names):
        # Prefix with the index: shards of different folders may share a name.
        download(
            f"gs://{bucket}/{name}",
            os.path.join(local_dir, f"{index:05d}-{os.path.basename(name)}"),
        )
    return os.path.join(local_dir, "*")


def download_dir(url: str, local_dir: str) -> str:
    """Copies every object under a gs:// folder (not deeper ones) into local_dir."""
    bucket, prefix = _split(url.rstrip("/") + "/")
    for blob in gcs_client().list_blobs(bucket, prefix=prefix):
        relative = blob.name[len(prefix) :]
        if relative and "/" not in relative:
            download(f"gs://{bucket}/{blob.name}", os.path.join(local_dir, relative))
    return local_dir


_local_copies: dict[str, str] = {}


def local_dir_for(path: str) -> str:
    """A model directory as a local folder: gs:// ones are downloaded once per process
    (into a fresh folder, so a model replaced in the bucket is never read stale)."""
    if not is_gcs(path):
        return path
    if path not in _local_copies:
        _local_copies[path] = download_dir(path, tempfile.mkdtemp(prefix="framevlad-model-"))
    return _local_copies[path]


def upload_dir(local_dir: str, url: str) -> None:
    """Copies a local folder tree to a gs:// folder."""
    bucket_name, prefix = _split(url.rstrip("/") + "/")
    bucket = gcs_client().bucket(bucket_name)
    for root, _, files in os.walk(local_dir):
        for file_name in files:
            local_path = os.path.join(root, file_name)
            relative = os.path.relpath(local_path, local_dir).replace(os.sep, "/")
            bucket.blob(prefix + relative).upload_from_filename(local_path)
