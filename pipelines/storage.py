"""Small reads and writes through Beam's FileSystems, so local paths and gs:// work alike."""

from apache_beam.io.filesystems import FileSystems


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
