"""features.storage on local paths and against a real GCS emulator."""

import os

import pytest

from features import storage
from features.cli import UsageError
from tests import gcs_emulator


def test_write_bytes_replaces_whole_and_makes_folders(tmp_path):
    path = str(tmp_path / "a" / "b" / "f.bin")
    storage.write_bytes(path, b"one")
    storage.write_text(path, "two")
    assert storage.read_text(path) == "two"
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "pca.npz"
    path.write_bytes(b"old")

    def disk_full(handle, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", lambda fd: disk_full(fd, b""))
    with pytest.raises(OSError, match="No space") as raised:
        storage.write_bytes(str(path), b"new")
    assert raised.value.filename == str(path)  # the file the user knows, not the temp name
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["pca.npz"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_a_read_only_folder_names_the_file(tmp_path):
    tmp_path.chmod(0o555)
    with pytest.raises(PermissionError) as raised:
        storage.write_bytes(str(tmp_path / "a.json"), b"{}")
    assert raised.value.filename == str(tmp_path / "a.json")


def test_local_output_moves_only_on_success(tmp_path):
    target = tmp_path / "model.keras"
    with storage.local_output(str(target)) as temp:
        assert temp.endswith("/model.keras") and temp != str(target)
        with open(temp, "w") as out:
            out.write("v1")
    assert target.read_text() == "v1"
    with pytest.raises(RuntimeError), storage.local_output(str(target)) as temp:
        with open(temp, "w") as out:
            out.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "v1"
    assert os.listdir(tmp_path) == ["model.keras"]
    with (
        pytest.raises(OSError, match="No space") as raised,
        storage.local_output(str(target)) as temp,
    ):
        raise OSError(28, "No space left on device", temp)
    assert raised.value.filename == str(target)


def test_create_exclusive_creates_once(tmp_path):
    path = str(tmp_path / "lease.json")
    assert storage.create_exclusive(path, b"first")
    assert not storage.create_exclusive(path, b"second")
    assert storage.read_bytes(path) == b"first"
    assert os.listdir(tmp_path) == ["lease.json"]


def test_delete_rename_exists(tmp_path):
    src, dst = str(tmp_path / "a"), str(tmp_path / "sub" / "b")
    storage.write_bytes(src, b"x")
    storage.rename(src, dst)
    assert not storage.exists(src) and storage.exists(dst) and storage.is_dir(str(tmp_path))
    storage.delete(dst)
    with pytest.raises(FileNotFoundError):
        storage.delete(dst)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(dst)


def make_tree(root) -> None:
    for name in ("a.mp4", "b.txt", "sub/c.mp4", "sub/deep/d.mp4", "odd[1]/e.mp4"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"v")


def test_match_star_stays_in_a_folder_and_double_star_crosses(tmp_path):
    make_tree(tmp_path)
    root = str(tmp_path)
    assert storage.match(f"{root}/*.mp4") == [f"{root}/a.mp4"]
    assert storage.match(f"{root}/*/*.mp4") == [f"{root}/odd[1]/e.mp4", f"{root}/sub/c.mp4"]
    assert storage.match(f"{root}/**/*.mp4") == [
        f"{root}/a.mp4",
        f"{root}/odd[1]/e.mp4",
        f"{root}/sub/c.mp4",
        f"{root}/sub/deep/d.mp4",
    ]
    assert storage.match(f"{root}/s?b/*") == [f"{root}/sub/c.mp4"]
    assert storage.match(f"{root}/[ab].*") == [f"{root}/a.mp4", f"{root}/b.txt"]
    assert storage.match(f"{root}/[!a].*") == [f"{root}/b.txt"]
    assert storage.match(f"{root}/odd[1]/e.mp4") == [f"{root}/odd[1]/e.mp4"]  # literal first
    assert storage.match(f"{root}/*.avi") == [] and storage.match(f"{root}/none") == []


def test_match_never_lists_half_written_files(tmp_path):
    (tmp_path / "frame").mkdir()
    (tmp_path / "frame" / "s-0.tfrecord").write_bytes(b"")
    (tmp_path / "frame" / f"{storage.TEMP_PREFIX}1234-s-1.tfrecord").write_bytes(b"")
    assert storage.match(f"{tmp_path}/frame/*") == [f"{tmp_path}/frame/s-0.tfrecord"]


def test_walk_files_follows_links_reports_dangling_ones_and_ends_loops(tmp_path):
    library, outside = tmp_path / "library", tmp_path / "outside"
    make_tree(outside)
    library.mkdir()
    (library / "own.mp4").write_bytes(b"v")
    os.symlink(outside / "sub", library / "linked_folder")
    os.symlink(outside / "a.mp4", library / "linked.mp4")
    os.symlink(tmp_path / "gone.mp4", library / "dangling.mp4")
    os.symlink(library, library / "linked_folder_loop")
    walked = dict(storage.walk_files(str(library)))
    assert walked == {
        f"{library}/dangling.mp4": "No such file or directory",
        f"{library}/linked.mp4": "",
        f"{library}/linked_folder/c.mp4": "",
        f"{library}/linked_folder/deep/d.mp4": "",
        f"{library}/own.mp4": "",
    }
    assert f"{library}/dangling.mp4" in storage.match(f"{library}/*.mp4")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_walk_files_names_an_unreadable_file(tmp_path):
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"v")
    secret.chmod(0)
    assert dict(storage.walk_files(str(tmp_path))) == {str(secret): "Permission denied"}


def test_walk_files_names_a_special_file_without_blocking_on_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    assert dict(storage.walk_files(str(tmp_path))) == {f"{tmp_path}/pipe.mp4": "not a regular file"}


def test_paths_join_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("x") == f"{tmp_path}/x" and storage.absolute("gs://b/x") == "gs://b/x"
    assert storage.join("gs://b/", "x", "y") == "gs://b/x/y"
    assert storage.join("/a", "b") == "/a/b"
    assert storage.stage_file("/a/b") == "/a/b" and storage.stage_glob("/a/*") == "/a/*"


def test_gcs_round_trip_and_exclusive_create(gcs_bucket):
    url = f"{gcs_bucket}/storage/one/file.txt"
    storage.write_text(url, "hello")
    assert storage.read_text(url) == "hello" and storage.exists(url)
    assert storage.is_dir(f"{gcs_bucket}/storage/one") and not storage.is_dir(url)
    assert storage.exists(f"{gcs_bucket}/storage") and not storage.exists(f"{gcs_bucket}/nope")
    with storage.open_read(url) as reader:
        reader.seek(1)
        assert reader.read() == b"ello"
    lease = f"{gcs_bucket}/storage/lease.json"
    assert storage.create_exclusive(lease, b"a") and not storage.create_exclusive(lease, b"b")
    assert storage.read_bytes(lease) == b"a"
    storage.rename(lease, f"{gcs_bucket}/storage/moved.json")
    storage.delete(f"{gcs_bucket}/storage/moved.json")
    with pytest.raises(FileNotFoundError, match="storage/moved.json"):
        storage.read_bytes(f"{gcs_bucket}/storage/moved.json")
    with pytest.raises(FileNotFoundError):
        storage.open_read(f"{gcs_bucket}/storage/moved.json")


def test_gcs_match_walk_stage_and_upload(gcs_bucket, tmp_path):
    make_tree(tmp_path / "tree")
    url = f"{gcs_bucket}/tree"
    storage.upload_dir(str(tmp_path / "tree"), url)
    assert storage.match(f"{url}/*.mp4") == [f"{url}/a.mp4"]
    assert storage.match(f"{url}/**/*.mp4") == [
        f"{url}/a.mp4",
        f"{url}/odd[1]/e.mp4",
        f"{url}/sub/c.mp4",
        f"{url}/sub/deep/d.mp4",
    ]
    assert storage.match(f"{url}/b.txt") == [f"{url}/b.txt"]
    assert [path for path, _ in storage.walk_files(f"{url}/sub")] == [
        f"{url}/sub/c.mp4",
        f"{url}/sub/deep/d.mp4",
    ]
    staged = storage.stage_dir(f"{url}/sub")
    assert os.listdir(staged) == ["c.mp4"] and storage.stage_dir(f"{url}/sub") == staged
    deep = storage.stage_dir(f"{url}/sub", recursive=True)
    assert os.path.isfile(os.path.join(deep, "deep", "d.mp4"))
    local_glob = storage.stage_glob(f"{url}/**/*.mp4")
    assert len(storage.match(local_glob)) == 4
    assert storage.read_bytes(storage.stage_file(f"{url}/a.mp4")) == b"v"
    with storage.local_output(f"{url}/model.keras") as temp, open(temp, "wb") as out:
        out.write(b"model")
    assert gcs_emulator.read(f"{url}/model.keras") == b"model"


def test_missing_bucket_is_a_usage_error_naming_the_flag(gcs_bucket):
    storage.check_bucket(f"{gcs_bucket}/x", "--output")
    with pytest.raises(UsageError, match=r"no bucket gs://no-such-bucket \(--output gs://"):
        storage.check_bucket("gs://no-such-bucket/x", "--output")
