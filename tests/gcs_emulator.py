"""A real GCS emulator (gcp-storage-emulator) on a free local port, for gs:// tests.

Run as a script, this module starts the emulator with one addition real GCS has and the
emulator lacks: an upload with `ifGenerationMatch=0` fails with 412 when the object exists
(features.storage.create_exclusive, i.e. leases, rely on it).
"""

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

from google.cloud import storage

BUCKET = "framevlad-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"gcp-storage-emulator did not listen on port {port}")


@contextlib.contextmanager
def running_emulator(log_path: Path) -> Iterator[str]:
    """Starts the emulator; yields its STORAGE_EMULATOR_HOST value."""
    port = free_port()
    command = [sys.executable, __file__, "start", "--host", "127.0.0.1", "--port", str(port)]
    command.append("--in-memory")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


def default_credentials(folder: Path) -> str:
    """A Google default credentials file that needs no network; returns its path.

    Beam's GCS filesystem looks up default credentials once per process, retrying for about
    25 s before it connects anonymously when there are none. With GOOGLE_APPLICATION_CREDENTIALS
    pointing here (an `authorized_user` holding a dummy token valid for centuries) the lookup
    succeeds at once and no token is ever refreshed; the emulator checks none."""
    path = folder / "credentials.json"
    credentials = {
        "type": "authorized_user",
        "client_id": "framevlad-test",
        "client_secret": "framevlad-test",
        "refresh_token": "framevlad-test",
        "token": "framevlad-test",
        "expiry": "2999-01-01T00:00:00Z",
    }
    path.write_text(json.dumps(credentials))
    return str(path)


def client() -> storage.Client:
    """Anonymous client; STORAGE_EMULATOR_HOST points it at the emulator."""
    anonymous = storage.Client.create_anonymous_client()
    anonymous.project = "framevlad-test"
    return anonymous


def upload_tree(local: Path, url: str) -> None:
    """Copies a local folder to gs://bucket/prefix."""
    bucket_name, prefix = url.removeprefix("gs://").split("/", 1)
    bucket = client().bucket(bucket_name)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            relative = path.relative_to(local).as_posix()
            bucket.blob(f"{prefix.rstrip('/')}/{relative}").upload_from_filename(str(path))


def list_names(url: str) -> list[str]:
    bucket_name, prefix = url.removeprefix("gs://").split("/", 1)
    blobs = client().list_blobs(bucket_name, prefix=prefix.rstrip("/") + "/")
    return sorted(blob.name[len(prefix.rstrip("/")) + 1 :] for blob in blobs)


def write(url: str, data: bytes) -> None:
    bucket_name, name = url.removeprefix("gs://").split("/", 1)
    client().bucket(bucket_name).blob(name).upload_from_string(data)


def read(url: str) -> bytes:
    bucket_name, name = url.removeprefix("gs://").split("/", 1)
    return client().bucket(bucket_name).blob(name).download_as_bytes()


def _honour_if_generation_match() -> None:
    """Wraps the emulator's upload handler: `ifGenerationMatch=0` means "only if absent"."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    upload = objects.insert

    def insert_if_absent(request, response, storage_state, *args, **kwargs):
        if request.query.get("ifGenerationMatch") == ["0"]:
            name = request.query.get("name", [None])[0]
            if name is None and isinstance(request.data, dict):
                name = request.data.get("meta", request.data).get("name")
            try:
                storage_state.get_file_obj(request.params["bucket_name"], name)
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "Precondition Failed"}})
                return None
        return upload(request, response, storage_state, *args, **kwargs)

    objects.insert = insert_if_absent
    for _, handlers in server.HANDLERS:
        for method, handler in handlers.items():
            if handler is upload:
                handlers[method] = insert_if_absent


if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    _honour_if_generation_match()
    sys.exit(main(sys.argv[1:]))
