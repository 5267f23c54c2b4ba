"""Small reads and writes through Beam's FileSystems, so local paths and gs:// work alike."""

import os
import tempfile

from apache_beam.io.filesystems import FileSystems

from pooling_models.staging import EMULATOR_ENV, gcs_client


def is_remote(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """Local paths made absolute (ids and manifests record them); URLs as they are."""
    return path if is_remote(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base.rstrip("/"), *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as source:
        return source.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file; FileSystems.create makes missing local folders."""
    with FileSystems.create(path) as sink:
        sink.write(data)


def match(pattern: str) -> list[str]:
    """Paths matching a glob (empty when none do)."""
    return sorted(metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list)


_staged: dict[str, str] = {}


def stage_locally(path: str) -> str:
    """A local copy of a remote file (the file itself when local), e.g. a weights file;
    copied once per process, keeping its name (its extension tells Keras the format)."""
    if not is_remote(path):
        return path
    if path not in _staged:
        local = os.path.join(tempfile.mkdtemp(prefix="framevlad-staged-"), path.rsplit("/", 1)[1])
        with open(local, "wb") as out:
            out.write(read_bytes(path))
        _staged[path] = local
    return _staged[path]


def bucket_of(path: str) -> str:
    return path.split("://", 1)[1].split("/", 1)[0]


def check_bucket(path: str, flag: str) -> None:
    """Fails fast, naming the flag, when a gs:// path's bucket does not exist."""
    if not path.startswith("gs://"):
        return
    if gcs_client().lookup_bucket(bucket_of(path)) is None:
        raise FileNotFoundError(f"{flag} {path}: no bucket gs://{bucket_of(path)}")


def skip_credentials_lookup_for_emulator() -> None:
    """With STORAGE_EMULATOR_HOST set, use GCS anonymously from the start.

    Beam looks for Google default credentials with about 20 s of retries before it falls
    back to an anonymous client, and its `--no_auth` flag does not reach that lookup; marking
    the lookup as done (with no credentials) makes every GcsIO client anonymous at once.
    """
    if not os.environ.get(EMULATOR_ENV):
        return
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials_init = True
        auth._Credentials._credentials = None
