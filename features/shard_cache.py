"""A local folder of whole record shards copied from a bucket, up to a size cap, so that the
epochs after the first read them from disk instead of the network.

A shard is copied the first time it is read, whole and atomically (features.storage: a
temp file renamed when complete), and only while the folder's files plus the shard stay
within the cap; shards that do not fit are streamed from the bucket every time. A copy is
named by its URL's hash, the object's generation and its name, so an object replaced in the
bucket is never read from a stale copy (which is deleted when the new one is made). Files
from earlier runs count towards the cap and are reused; one process at a time should fill a
folder (each process counts the cap on its own).
"""

import contextlib
import errno
import hashlib
import os
import threading
import warnings

from features import storage

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class ShardCache:
    """Local copies of gs:// shards in `folder`, at most `max_bytes` in all (files already in
    the folder included). Thread-safe: tf.data fetches several shards at once."""

    def __init__(self, folder: str, max_bytes: int) -> None:
        if storage.is_remote(folder):
            raise ValueError(f"{folder}: the shard cache must be a local folder")
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes} < 0")
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._shard_locks: dict[str, threading.Lock] = {}
        # URL hash -> the copy held for it (of any generation), and the bytes of all copies.
        self._copies: dict[str, str] = {}
        self._used = 0
        for item in os.scandir(folder):
            if item.is_file() and not item.name.startswith(storage.TEMP_PREFIX):
                self._copies[item.name.split("-", 1)[0]] = item.path
                self._used += item.stat().st_size
        self._stopped = False

    @property
    def used_bytes(self) -> int:
        """Bytes of the complete copies in the folder (and copies under way)."""
        return self._used

    def local_name(self, entry: storage.FileEntry) -> str:
        """Where the copy of `entry` lives (or would)."""
        name = entry.path.rstrip("/").rsplit("/", 1)[-1]
        return os.path.join(self.folder, f"{_digest(entry.path)}-{entry.version}-{name}")

    def fetch(self, entry: storage.FileEntry) -> str:
        """The path to read `entry` from: its local copy, made now if there is room; else
        the entry's own path (local files are read where they are; gs:// ones streamed)."""
        if not storage.is_remote(entry.path):
            return entry.path
        local = self.local_name(entry)
        with self._lock:
            shard_lock = self._shard_locks.setdefault(local, threading.Lock())
        with shard_lock:  # two readers of one shard: one copy, the other waits for it
            if _size(local) == entry.size:
                return local
            self._drop_copy(_digest(entry.path))  # another generation's, or a damaged one
            if not self._reserve(entry.size):
                return entry.path
            try:
                storage.copy_to_local(entry.path, local)
            except OSError as error:
                self._release(entry.size)
                if error.errno in _NO_SPACE:
                    self._stop(f"{self.folder} is full ({error.strerror}): later shards stream")
                else:
                    warnings.warn(f"{entry.path}: not cached, streamed ({error})", stacklevel=1)
                return entry.path
            with self._lock:
                self._copies[_digest(entry.path)] = local
            return local

    def _drop_copy(self, digest: str) -> None:
        with self._lock:
            path = self._copies.pop(digest, None)
        if path is not None:
            size = _size(path)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            self._release(max(size, 0))

    def _reserve(self, size: int) -> bool:
        with self._lock:
            if self._stopped or self._used + size > self.max_bytes:
                return False
            self._used += size
            return True

    def _release(self, size: int) -> None:
        with self._lock:
            self._used -= size

    def _stop(self, reason: str) -> None:
        with self._lock:
            stopping, self._stopped = not self._stopped, True
        if stopping:
            warnings.warn(f"shard cache: {reason}", stacklevel=1)


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _size(path: str) -> int:
    with contextlib.suppress(OSError):
        return os.path.getsize(path)
    return -1
