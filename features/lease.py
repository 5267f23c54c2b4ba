"""One writer per output: an exclusive lease file, `<output>/.lease.json`.

Two runs committing into one output would write every id twice, so every writing job takes
the lease before any work. It is created atomically (locally a hard link that fails when the
file exists; on GCS an upload with if_generation_match=0) and holds who took it, so that a
refusal names the holder. A lease whose holder is gone (same host, pid no longer running) or
that is older than `--lease_timeout` is stale; it is broken only when the user says so with
`--break_lease`, since a run on another machine cannot be seen from here.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from features import storage
from features.cli import UsageError

LEASE_FILE = ".lease.json"
DEFAULT_LEASE_TIMEOUT_S = 86400.0


@dataclass
class Lease:
    """A held lease; `release()` (or leaving the `with` block) gives it up."""

    path: str
    holder: dict[str, Any] = field(default_factory=dict)
    released: bool = False

    def release(self) -> None:
        """Deletes the lease file if it is still ours (a broken and retaken one is not)."""
        if self.released:
            return
        self.released = True
        current = _read_holder(self.path)
        if current is not None and current.get("lease_id") == self.holder["lease_id"]:
            with contextlib.suppress(FileNotFoundError):
                storage.delete(self.path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def acquire(output: str, tool: str, timeout_s: float, break_lease: bool, run_id: str = "") -> Lease:
    """Takes the lease on `output` or raises UsageError naming the holder (see module doc)."""
    path = storage.join(output, LEASE_FILE)
    started = time.time()
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "started_unix": started,
        "tool": tool,
        "run_id": run_id,
        "lease_id": uuid.uuid4().hex,
    }
    body = (json.dumps(holder, indent=2, sort_keys=True) + "\n").encode()
    where = f"--output {output}"
    for _ in range(3):  # a lease released or broken meanwhile: try again
        if storage.create_exclusive(path, body):
            return Lease(path, holder)
        current = _read_holder(path)
        if current is None and storage.exists(path):
            current = {}  # unreadable: nobody can hold it meaningfully
        if current is None:
            continue
        stale = _stale_reason(current, timeout_s)
        if not break_lease:
            if stale:
                what = f"{output} has a stale lease from {_describe(current)} ({stale})"
                raise UsageError(what, where, "pass --break_lease to take it over")
            what = f"{output} is being written by {_describe(current)}"
            raise UsageError(what, where, "wait for it, or pass --break_lease if it is gone")
        with contextlib.suppress(FileNotFoundError):
            storage.delete(path)
        break_lease = False  # break one lease, not a new holder's that raced in meanwhile
    what = f"{output}: another run took the lease meanwhile"
    raise UsageError(what, where, "wait for it to finish")


def _read_holder(path: str) -> dict[str, Any] | None:
    """The lease's content; None when there is none, {} when it is not a lease's JSON."""
    try:
        content = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unreadable .lease.json"
    return (
        f"{holder.get('tool', '?')} pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"since {holder.get('started', '?')}"
    )


def _stale_reason(holder: dict[str, Any], timeout_s: float) -> str:
    """Why the holder is taken to be gone, or "" when it may still be running."""
    if not holder:
        return "it cannot be read"
    started = holder.get("started_unix")
    if not isinstance(started, int | float) or time.time() - started > timeout_s:
        return f"older than --lease_timeout {timeout_s:g} s"
    pid = holder.get("pid")
    here = holder.get("host") == socket.gethostname()
    if here and isinstance(pid, int) and pid > 0 and not _pid_running(pid):
        return f"pid {pid} is no longer running on this host"
    return ""


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
