"""features.lease: one writer per output, locally and in a bucket."""

import json
import os
import socket
import subprocess
import time

import pytest

from features import lease, storage
from features.cli import UsageError


def write_lease(output, **holder) -> None:
    fields = {"host": socket.gethostname(), "pid": os.getpid(), "started": "then"}
    fields |= {"started_unix": time.time(), "tool": "extract_features", "lease_id": "other"}
    storage.write_text(storage.join(str(output), lease.LEASE_FILE), json.dumps(fields | holder))


def gone_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with lease.acquire(str(tmp_path), "extract_features", 60, False, run_id="r1") as held:
        holder = json.loads(storage.read_text(held.path))
        assert holder["pid"] == os.getpid() and holder["run_id"] == "r1"
        with pytest.raises(UsageError) as refused:
            lease.acquire(str(tmp_path), "tag_videos", 60, False)
        message = str(refused.value)
        assert f"is being written by extract_features pid {os.getpid()} on" in message
        assert f"(--output {tmp_path})" in message and "--break_lease" in message
    assert not (tmp_path / lease.LEASE_FILE).exists()
    lease.acquire(str(tmp_path), "tag_videos", 60, False).release()


def test_a_lease_of_a_dead_process_is_broken_only_when_asked(tmp_path):
    pid = gone_pid()
    write_lease(tmp_path, pid=pid)
    with pytest.raises(UsageError, match=f"stale lease .*pid {pid} is no longer running"):
        lease.acquire(str(tmp_path), "extract_features", 60, False)
    with lease.acquire(str(tmp_path), "extract_features", 60, True) as held:
        assert json.loads(storage.read_text(held.path))["pid"] == os.getpid()


def test_an_old_lease_is_stale_even_when_its_pid_runs(tmp_path):
    write_lease(tmp_path, started_unix=time.time() - 100)
    with pytest.raises(UsageError, match="older than --lease_timeout 10 s"):
        lease.acquire(str(tmp_path), "train_pool", 10, False)
    assert lease.acquire(str(tmp_path), "train_pool", 10, True).holder["tool"] == "train_pool"


def test_a_live_lease_on_another_host_is_broken_only_with_break_lease(tmp_path):
    write_lease(tmp_path, host="elsewhere", pid=1)
    with pytest.raises(UsageError, match="pid 1 on elsewhere since then"):
        lease.acquire(str(tmp_path), "tag_videos", 60, False)
    lease.acquire(str(tmp_path), "tag_videos", 60, True).release()


def test_release_leaves_a_lease_someone_else_took(tmp_path):
    held = lease.acquire(str(tmp_path), "extract_features", 60, False)
    write_lease(tmp_path, lease_id="the new holder")
    held.release()
    assert json.loads((tmp_path / lease.LEASE_FILE).read_text())["lease_id"] == "the new holder"


def test_an_unreadable_lease_is_stale(tmp_path):
    (tmp_path / lease.LEASE_FILE).write_text("{torn")
    with pytest.raises(UsageError, match="an unreadable .lease.json"):
        lease.acquire(str(tmp_path), "extract_features", 60, False)
    lease.acquire(str(tmp_path), "extract_features", 60, True).release()


def test_a_lease_in_a_bucket(gcs_bucket):
    output = f"{gcs_bucket}/leased"
    with lease.acquire(output, "extract_features", 60, False):
        with pytest.raises(UsageError, match="is being written by extract_features"):
            lease.acquire(output, "extract_features", 60, False)
        assert storage.exists(f"{output}/{lease.LEASE_FILE}")
    assert not storage.exists(f"{output}/{lease.LEASE_FILE}")
