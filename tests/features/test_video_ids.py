import pytest

from features import video_ids


@pytest.mark.parametrize(
    ("pattern", "root"),
    [
        ("/lib", "/lib"),
        ("/lib/", "/lib"),
        ("/lib/**", "/lib"),
        ("/lib/cats/*.mp4", "/lib/cats"),
        ("/lib/c*/x.mp4", "/lib"),
        ("gs://bucket/videos/**/*.mp4", "gs://bucket/videos"),
    ],
)
def test_id_root_is_the_non_wildcard_folder_prefix(pattern, root):
    assert video_ids.id_root_of(pattern) == root


@pytest.mark.parametrize(
    ("path", "root", "video_id"),
    [
        ("/lib/cats/a.mp4", "/lib", "cats/a"),
        ("/lib/a.b.mkv", "/lib/", "a.b"),
        ("gs://b/v/x/y.webm", "gs://b/v", "x/y"),
    ],
)
def test_video_id_is_relative_path_without_extension(path, root, video_id):
    assert video_ids.video_id_from_path(path, root) == video_id


def test_path_outside_root_is_an_error():
    with pytest.raises(ValueError, match="not under the id root"):
        video_ids.video_id_from_path("/other/a.mp4", "/lib")


def test_video_extensions_and_folder_labels():
    assert video_ids.is_video_file("/a/B.MP4")
    assert not video_ids.is_video_file("/a/labels.csv")
    assert video_ids.folder_label("/lib/ApplyEyeMakeup/v_1.avi") == "ApplyEyeMakeup"
