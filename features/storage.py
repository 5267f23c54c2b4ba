"""The one storage layer: local paths and gs:// URLs read, written, matched and staged alike.

Local files go through `os`; gs:// objects through google-cloud-storage (features.gcs, whose
client points at a GCS emulator when STORAGE_EMULATOR_HOST is set). Every write is whole or
absent: locally a temp file in the same folder is fsynced and renamed over the target; on GCS
an upload is visible only once complete. Errors are OSError subclasses that name the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from features import gcs
from features.cli import UsageError

# Names of half-written files: never matched, listed or staged.
TEMP_PREFIX = ".framevlad-tmp-"
_WILDCARD = re.compile(r"[*?\[]")
_GLOB_TOKEN = re.compile(r"\*\*/|\*\*|\*|\?|\[!?[^\]/]+\]|[^*?\[]+|\[")
_GLOB_REGEX = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def is_remote(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """Local paths made absolute (ids and manifests record them); URLs as they are."""
    return path if is_remote(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    if not is_remote(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def exists(path: str) -> bool:
    """A file or folder (gs://: an object, or any object under `path/`)."""
    if not is_remote(path):
        return os.path.exists(path)
    return gcs.is_file(path) or gcs.is_dir(path)


def is_dir(path: str) -> bool:
    return gcs.is_dir(path) if is_remote(path) else os.path.isdir(path)


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as source:
            return source.read()
    return gcs.read(path)


def read_text(path: str) -> str:
    return read_bytes(path).decode()


def open_read(path: str) -> BinaryIO:
    """A seekable binary reader, e.g. to stream a video into the decoder without a copy."""
    if not is_remote(path):
        return open(path, "rb")  # noqa: SIM115 -- the caller closes it
    return gcs.open_read(path)


def _temp_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def _write_temp(path: str, data: bytes) -> str:
    """Writes `data` whole and fsynced to a temp file beside `path`; returns its name.
    An OSError (disk full, read-only folder) names `path`, the file the user knows."""
    temp = _temp_name(path)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temp)
        if isinstance(error, OSError) and error.errno is not None:
            raise type(error)(error.errno, error.strerror, path) from None
        raise
    return temp


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file atomically: readers see the old content or the new, never a part."""
    if is_remote(path):
        gcs.write(path, data)
        return
    temp = _write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def create_exclusive(path: str, data: bytes) -> bool:
    """Creates `path` holding `data` unless it exists; False when it does (e.g. a held lease).

    Locally the file is written whole under a temp name and hard-linked into place, which
    fails when the target exists; on GCS the upload carries if_generation_match=0."""
    if is_remote(path):
        return gcs.write(path, data, only_if_absent=True)
    temp = _write_temp(path, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        os.remove(temp)
    return True


def delete(path: str) -> None:
    """Removes one file or object; FileNotFoundError when there is none."""
    if is_remote(path):
        gcs.delete(path)
    else:
        os.remove(path)


def rename(src: str, dst: str) -> None:
    """Moves a file: atomic locally; on GCS a server-side copy, then the source deleted."""
    if not is_remote(src) and not is_remote(dst):
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        os.replace(src, dst)
        return
    if is_remote(src) and is_remote(dst):
        gcs.copy(src, dst)
    else:
        write_bytes(dst, read_bytes(src))
    delete(src)


def walk_files(folder: str) -> Iterator[tuple[str, str]]:
    """(path, error) for every file under `folder`, sorted; error is "" for a readable file.

    Locally symlinks to files and folders are followed (a link back to a folder being walked
    is not, so loops end); a dangling or unreadable link, an unreadable folder or a special
    file comes with its OS error text, so that the caller can account for it. gs:// lists
    the objects under the prefix."""
    if is_remote(folder):
        bucket, name = gcs.split(folder)
        prefix = f"{gcs.SCHEME}{bucket}/" + (name.rstrip("/") + "/" if name.strip("/") else "")
        yield from ((url, "") for url in gcs.list_urls(prefix))
        return
    yield from _walk_local(folder, (), None)


def _walk_local(
    folder: str, ancestors: tuple[str, ...], depth: int | None
) -> Iterator[tuple[str, str]]:
    real = os.path.realpath(folder)
    if real in ancestors:
        return  # a link back up the tree: its files are being walked already
    try:
        names = sorted(os.listdir(folder))
    except OSError as error:
        yield folder, error.strerror or str(error)
        return
    for name in names:
        if name.startswith(TEMP_PREFIX):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            if depth is None or depth > 0:
                next_depth = None if depth is None else depth - 1
                yield from _walk_local(path, (*ancestors, real), next_depth)
        elif depth is None or depth == 0:
            yield path, _file_error(path)


def _file_error(path: str) -> str:
    """Why `path` is not a regular file we may read (OS error text); "" when it is."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return "not a regular file"
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as error:
        return error.strerror or str(error)
    return ""


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay within one folder; `**` crosses folders (`**/` also matches none)."""

    def translate(token: str) -> str:
        if token in _GLOB_REGEX:
            return _GLOB_REGEX[token]
        if token.startswith("[") and len(token) > 1:
            negate = token.startswith("[!")
            body = re.escape(token[2 if negate else 1 : -1]).replace(r"\-", "-")
            return f"[^/{body}]" if negate else f"[{body}]"
        return re.escape(token)

    return re.compile("".join(translate(token) for token in _GLOB_TOKEN.findall(pattern)))


def match(pattern: str) -> list[str]:
    """Files (objects) matching a glob, sorted; [] when none do.

    `*` and `?` do not cross `/`, `**` does. A pattern that names an existing file is that
    file, glob characters and all (`clips[1].mp4`). Local symlinks are followed as in
    walk_files, and a dangling link that matches is listed (reading it names the error)."""
    if is_remote(pattern):
        return _match_remote(pattern)
    if os.path.lexists(pattern) and not os.path.isdir(pattern):
        return [pattern]
    found = _WILDCARD.search(pattern)
    if found is None:
        return []
    base = os.path.dirname(pattern[: found.start()])
    rest = pattern[len(base) :].lstrip("/")
    depth = None if "**" in rest else rest.count("/")
    regex = _pattern_regex(pattern)
    walked = (path for path, _ in _walk_local(base or os.curdir, (), depth))
    paths = walked if base else (os.path.relpath(path) for path in walked)
    return sorted(path for path in paths if regex.fullmatch(path))


def _match_remote(pattern: str) -> list[str]:
    found = _WILDCARD.search(pattern)
    if found is None:
        return [pattern] if gcs.is_file(pattern) else []
    regex = _pattern_regex(pattern)
    return [url for url in gcs.list_urls(pattern[: found.start()]) if regex.fullmatch(url)]


@dataclass(frozen=True)
class FileEntry:
    """A matched file: its path or URL, its size in bytes and a version that changes when its
    content is replaced (gs://: the object's generation; local: the mtime in ns)."""

    path: str
    size: int
    version: str


def match_entries(pattern: str) -> list[FileEntry]:
    """`match` with each file's size and version: on gs:// from the bucket's listing (one
    request per 1000 objects), locally from os.stat."""
    if not is_remote(pattern):
        stats = ((path, os.stat(path)) for path in match(pattern))
        return [FileEntry(path, info.st_size, str(info.st_mtime_ns)) for path, info in stats]
    found = _WILDCARD.search(pattern)
    if found is None:
        info = gcs.stat(pattern)
        return [] if info is None else [FileEntry(pattern, *info)]
    regex = _pattern_regex(pattern)
    listed = gcs.list_objects(pattern[: found.start()])
    return [FileEntry(*entry) for entry in listed if regex.fullmatch(entry[0])]


def copy_to_local(path: str, local_path: str) -> None:
    """Copies a file or gs:// object to `local_path`, whole or not at all (a temp file in the
    same folder, renamed when complete)."""
    with local_output(local_path) as temp:
        if is_remote(path):
            gcs.download(path, temp)
        else:
            shutil.copyfile(path, temp)


_staged: dict[str, str] = {}


def stage_file(path: str) -> str:
    """A local copy of a remote file (a local path as is), e.g. a weights file; copied once
    per process, keeping its name (its extension tells Keras the format)."""
    if not is_remote(path):
        return path
    if path not in _staged:
        local = os.path.join(tempfile.mkdtemp(prefix="framevlad-staged-"), path.rsplit("/", 1)[1])
        gcs.download(path, local)
        _staged[path] = local
    return _staged[path]


def stage_dir(url: str, recursive: bool = False) -> str:
    """A local copy of a folder's files (a local folder as is), once per process, into a fresh
    folder so that a folder replaced in the bucket is never read stale from an older process.
    Subfolders (e.g. a model's training backup) are copied only when `recursive`."""
    if not is_remote(url):
        return url
    key = f"{url}\n{recursive}"
    if key not in _staged:
        local_dir = tempfile.mkdtemp(prefix="framevlad-dir-")
        prefix = url.rstrip("/") + "/"
        for object_url, _ in walk_files(url):
            relative = object_url[len(prefix) :]
            if recursive or "/" not in relative:
                gcs.download(object_url, os.path.join(local_dir, *relative.split("/")))
        _staged[key] = local_dir
    return _staged[key]


def stage_glob(pattern: str) -> str:
    """A local glob over copies of the matched objects (the pattern itself when local).
    Records are read every epoch, so one download beats streaming them again each time."""
    if not is_remote(pattern):
        return pattern
    urls = match(pattern)
    if not urls:
        raise FileNotFoundError(errno.ENOENT, "no objects matched", pattern)
    local_dir = tempfile.mkdtemp(prefix="framevlad-records-")
    for index, url in enumerate(urls):
        # Prefixed with the index: shards of different folders may share a name.
        gcs.download(url, os.path.join(local_dir, f"{index:05d}-{url.rsplit('/', 1)[1]}"))
    return os.path.join(local_dir, "*")


def upload_dir(local_dir: str, url: str) -> None:
    """Copies a local folder tree to `url` (gs:// or local), each file atomically."""
    for local_path, _ in _walk_local(local_dir, (), None):
        relative = os.path.relpath(local_path, local_dir).split(os.sep)
        target = join(url, *relative)
        if is_remote(target):
            gcs.upload(local_path, target)
        else:
            with local_output(target) as temp:
                shutil.copyfile(local_path, temp)


@contextlib.contextmanager
def local_output(path: str) -> Iterator[str]:
    """Yields a local path to write `path`'s content to (keeping its name: Keras checks the
    extension); moves it to `path` atomically only when the block succeeds."""
    if is_remote(path):
        temp_dir = tempfile.mkdtemp(prefix="framevlad-output-")
    else:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=folder)
    temp = os.path.join(temp_dir, os.path.basename(path.rstrip("/")))
    try:
        yield temp
        if is_remote(path):
            gcs.upload(temp, path)
        else:
            _fsync(temp)
            os.replace(temp, path)
    except OSError as error:
        if error.errno is None or not str(error.filename or "").startswith(temp_dir):
            raise
        raise type(error)(error.errno, error.strerror, path) from None  # name the real file
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _fsync(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def check_bucket(path: str, flag: str) -> None:
    """Fails fast, naming the flag, when a gs:// path's bucket does not exist."""
    if not path.startswith(gcs.SCHEME) or gcs.bucket_exists(path):
        return
    raise UsageError(
        f"no bucket gs://{gcs.split(path)[0]}",
        f"{flag} {path}",
        "create the bucket or fix the URL",
    )
