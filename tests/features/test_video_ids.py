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


HOSTILE_IDS = [
    "plain/id",
    "new\nline",
    "tab\there",
    'quote"d',
    "comma,and;semi",
    "back\\slash",
    "carriage\rreturn",
    "caf\u00e9 \u2028 sep",
    # a file name with a byte that is not UTF-8, as os.fsdecode gives it
    b"latin1-\xff".decode("utf-8", "surrogateescape"),
]


def test_any_id_survives_the_done_ids_file():
    text = "".join(video_ids.encode_id_line(video_id) + "\n" for video_id in HOSTILE_IDS)
    assert text.isascii() and text.count("\n") == len(HOSTILE_IDS)
    assert video_ids.read_id_lines(text) == HOSTILE_IDS
    assert video_ids.read_id_lines(text.replace("\n", "\r\n")) == HOSTILE_IDS


def test_legacy_txt_files_read_one_id_per_line():
    assert video_ids.read_id_lines("a\nb c\n\nd\n", legacy=True) == ["a", "b c", "d"]


def test_a_damaged_ids_line_is_named():
    with pytest.raises(ValueError, match="line 2 is not a JSON string"):
        video_ids.read_id_lines('"a"\nplain\n')
