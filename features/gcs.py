"""The gs:// half of features.storage (which callers use; nothing else imports this).

google-cloud-storage underneath, imported only when a gs:// URL is met. The client points at
a GCS emulator when STORAGE_EMULATOR_HOST is set (tests), through public client options.
Errors come out as the OSError a local path would raise, naming the URL.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from google.cloud import storage as gcs

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
SCHEME = "gs://"


def client() -> gcs.Client:
    """A client per process: anonymous against $STORAGE_EMULATOR_HOST, else default credentials."""
    return _client(os.environ.get(EMULATOR_ENV, ""), os.getpid())


@functools.cache
def _client(emulator_host: str, pid: int) -> gcs.Client:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    if not emulator_host:
        return gcs.Client()
    return gcs.Client(
        project=os.environ.get("GOOGLE_CLOUD_PROJECT", "framevlad-emulator"),
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator_host},
    )


def split(url: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> ("bucket", "a/b")."""
    if not url.startswith(SCHEME):
        raise ValueError(f"{url}: only local paths and gs:// URLs are supported")
    bucket, _, name = url[len(SCHEME) :].partition("/")
    return bucket, name


def _blob(url: str):  # -> google.cloud.storage.Blob
    bucket, name = split(url)
    return client().bucket(bucket).blob(name)


@contextlib.contextmanager
def errors(url: str) -> Iterator[None]:
    """google.api_core errors -> the OSError a local path would raise, naming the URL."""
    from google.api_core import exceptions

    try:
        yield
    except exceptions.NotFound:
        raise FileNotFoundError(errno.ENOENT, "No such object", url) from None
    except exceptions.Forbidden:
        raise PermissionError(errno.EACCES, "Permission denied", url) from None
    except exceptions.GoogleAPICallError as error:
        reason = f"GCS error {error.code} ({type(error).__name__})"
        raise OSError(errno.EIO, reason, url) from None
    except exceptions.RetryError:
        raise OSError(errno.ETIMEDOUT, "GCS unreachable (retries timed out)", url) from None


def bucket_exists(url: str) -> bool:
    with errors(url):
        return client().lookup_bucket(split(url)[0]) is not None


def is_dir(url: str) -> bool:
    """A bucket, or a prefix with at least one object under `url/`."""
    bucket, name = split(url)
    if not name.strip("/"):
        return bucket_exists(url)
    with errors(url):
        blobs = client().list_blobs(bucket, prefix=name.rstrip("/") + "/", max_results=1)
        return any(True for _ in blobs)


def is_file(url: str) -> bool:
    with errors(url):
        return bool(split(url)[1]) and _blob(url).exists()


def list_urls(url_prefix: str) -> list[str]:
    """Objects whose URL starts with `url_prefix`, sorted (folder placeholders left out)."""
    return [url for url, _, _ in list_objects(url_prefix)]


def list_objects(url_prefix: str) -> list[tuple[str, int, str]]:
    """(URL, size in bytes, generation) of the objects under `url_prefix`, sorted by URL:
    one listing, no request per object."""
    bucket, prefix = split(url_prefix)
    with errors(url_prefix):
        blobs = [
            (f"{SCHEME}{bucket}/{blob.name}", int(blob.size or 0), str(blob.generation))
            for blob in client().list_blobs(bucket, prefix=prefix)
            if not blob.name.endswith("/")
        ]
    return sorted(blobs)


def stat(url: str) -> tuple[int, str] | None:
    """(size in bytes, generation) of one object; None when there is none."""
    bucket, name = split(url)
    if not name:
        return None
    with errors(url):
        blob = client().bucket(bucket).get_blob(name)
    return None if blob is None else (int(blob.size or 0), str(blob.generation))


def read(url: str) -> bytes:
    with errors(url):
        return _blob(url).download_as_bytes()


def open_read(url: str) -> BinaryIO:
    blob = _blob(url)
    with errors(url):
        blob.reload()  # a missing object fails here, not at the first read
        return blob.open("rb")


def write(url: str, data: bytes, only_if_absent: bool = False) -> bool:
    """One upload, visible only once complete; False when `only_if_absent` and it exists."""
    from google.api_core import exceptions

    with errors(url):
        try:
            _blob(url).upload_from_string(data, if_generation_match=0 if only_if_absent else None)
        except exceptions.PreconditionFailed:
            return False
    return True


def upload(local_path: str, url: str) -> None:
    with errors(url):
        _blob(url).upload_from_filename(local_path)


def download(url: str, local_path: str) -> None:
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    with errors(url):
        _blob(url).download_to_filename(local_path)


def delete(url: str) -> None:
    with errors(url):
        _blob(url).delete()


def copy(src: str, dst: str) -> None:
    """A server-side copy."""
    bucket, name = split(dst)
    with errors(src):
        source = _blob(src)
        source.bucket.copy_blob(source, client().bucket(bucket), name)
