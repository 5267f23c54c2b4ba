"""The HTML report, checked in a real headless Chromium: what it lays out, not just what it says."""

import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from features.synthetic_video import Shape, render_shapes_frame
from pipelines.report import encode_thumbnail, thumbnail_name, write_report
from tests import browser

THUMBNAILED = "alpha"
FROM_RECORDS = "beta"
ODD_ID = "gamma <b>\"&'"  # markup, quotes and an ampersand must come back intact
SCREEN_SIZE = (1200, 1600)  # (width, height)
HEADER_RGB = (31, 41, 55)  # #1f2937, the header's background

TAGS = pd.DataFrame(
    [
        (THUMBNAILED, "/library/alpha.mp4", 1, 3, "cat", 0.91),
        (THUMBNAILED, "/library/alpha.mp4", 2, 7, "dog", 0.35),
        (THUMBNAILED, "/library/alpha.mp4", 3, 1, "car", 0.02),
        (FROM_RECORDS, "", 1, 7, "dog", 0.66),
        (FROM_RECORDS, "", 2, 3, "cat", 0.50),
        (ODD_ID, "/library/with space/<odd>.mkv", 1, 1, "car <fast>", 0.125),
    ],
    columns=["id", "path", "rank", "label_index", "label_name", "score"],
)
SEGMENTS = pd.DataFrame(
    [
        (THUMBNAILED, 0.0, 4.0, 3, "cat", 0.8),
        (THUMBNAILED, 0.0, 4.0, 7, "dog", 0.1),
        (THUMBNAILED, 4.0, 8.0, 7, "dog", 0.7),
        (THUMBNAILED, 4.0, 8.0, 3, "cat", 0.2),
        (THUMBNAILED, 8.0, 10.0, 1, "car", 0.6),
        (FROM_RECORDS, 0.0, 5.0, 7, "dog", 0.9),
        (FROM_RECORDS, 5.0, 6.5, 3, "cat", 0.4),
    ],
    columns=["id", "start_s", "end_s", "label_index", "label_name", "score"],
)
# (id, start_s, end_s, top label) of each block the timeline should draw.
BLOCKS = [
    (THUMBNAILED, 0.0, 4.0, "cat 0.80", 10.0),
    (THUMBNAILED, 4.0, 8.0, "dog 0.70", 10.0),
    (THUMBNAILED, 8.0, 10.0, "car 0.60", 10.0),
    (FROM_RECORDS, 0.0, 5.0, "dog 0.90", 6.5),
    (FROM_RECORDS, 5.0, 6.5, "cat 0.40", 6.5),
]
# proto3 JSON leaves out empty fields, so the second line has no video_id or detail.
FAILURES = [
    {"path": "/library/broken.mp4", "video_id": "broken", "reason": "decode_error",
     "detail": "moov atom not found", "run_id": "r1"},
    {"path": "/library/notes.txt", "reason": "not_video", "run_id": "r1"},
]  # fmt: skip
# Runs after layout and image decoding, so the dumped DOM carries what Chromium really drew.
MEASURE_SCRIPT = """<script>
addEventListener("load", () => {
  const box = (element) => element.getBoundingClientRect();
  for (const bar of document.querySelectorAll("div.bar")) {
    bar.dataset.rendered = (box(bar.firstElementChild).width / box(bar).width).toFixed(4);
  }
  for (const block of document.querySelectorAll(".segment")) {
    const strip = box(block.parentElement), drawn = box(block);
    block.dataset.renderedLeft = ((drawn.left - strip.left) / strip.width).toFixed(4);
    block.dataset.renderedWidth = (drawn.width / strip.width).toFixed(4);
  }
  for (const image of document.images) {
    image.dataset.loaded = image.complete && image.naturalWidth > 0 ? "yes" : "no";
  }
});
</script>"""


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list["Element"] = field(default_factory=list)

    def find(self, css_class: str) -> list["Element"]:
        """Descendants whose class list holds `css_class`, in document order."""
        found = []
        for child in self.children:
            if css_class in child.attrs.get("class", "").split():
                found.append(child)
            found.extend(child.find(css_class))
        return found


class _TreeBuilder(HTMLParser):
    """Chromium serializes well-formed HTML, so a stack of open elements is a faithful tree."""

    VOID = {"img", "meta", "br", "hr", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack = [Element("#document", {})]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and len(self.stack) > 1:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.text += data


def parse(dom: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(dom)
    builder.close()
    return builder.stack[0]


def stripes_frame() -> np.ndarray:
    """A square [224, 224, 3] frame, as a backbone sees it, with shapes in several colours."""
    shapes = [
        Shape("square", (56, 56), 40, (220, 40, 40)),
        Shape("disc", (150, 150), 50, (40, 200, 60)),
        Shape("square", (170, 50), 30, (250, 220, 30)),
    ]
    return render_shapes_frame(224, 224, shapes, background=(30, 60, 200))


def write_output(folder: Path) -> None:
    """A tag_videos output folder written by hand: tags, segments, failures, one thumbnail."""
    TAGS.to_parquet(folder / "tags.parquet")
    SEGMENTS.to_parquet(folder / "segments.parquet")
    lines = "".join(json.dumps(failure) + "\n" for failure in FAILURES)
    (folder / "failed-00000-of-00001.jsonl").write_text(lines)
    thumbnails = folder / "report" / "thumbnails"
    thumbnails.mkdir(parents=True)
    thumbnail = encode_thumbnail(stripes_frame(), display_size=(120, 160))
    (thumbnails / thumbnail_name(THUMBNAILED)).write_bytes(thumbnail)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("tagged")
    write_output(output)
    return Path(write_report(str(output)))


@pytest.fixture(scope="module")
def rendered(report: Path) -> Element:
    """The report's DOM after Chromium laid it out, with measured sizes as data attributes."""
    measured = report.with_name("measured.html")
    page = report.read_text(encoding="utf-8")
    measured.write_text(page.replace("</body>", MEASURE_SCRIPT + "</body>"), encoding="utf-8")
    return parse(browser.dump_dom(str(measured)))


def cards_by_id(document: Element) -> dict[str, Element]:
    return {card.attrs["data-id"]: card for card in document.find("video")}


def test_thumbnail_name_is_a_safe_distinct_file_name():
    ids = ["a/b", "a_b", "../../etc/passwd", "x" * 1000, "ビデオ", ""]
    names = [thumbnail_name(video_id) for video_id in ids]
    assert all(re.fullmatch(r"[0-9a-f]{40}\.jpg", name) for name in names)
    assert len(set(names)) == len(ids)


@pytest.mark.parametrize(
    "display_size, expected",
    [((720, 1280), (240, 135)), ((1920, 1080), (135, 240)), ((120, 160), (240, 180)),
     (None, (240, 240)), ((0, 0), (240, 240))],
)  # fmt: skip
def test_encode_thumbnail_restores_the_display_aspect(display_size, expected):
    thumbnail = Image.open(io.BytesIO(encode_thumbnail(stripes_frame(), display_size)))
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == expected  # (width, height)


def test_encode_thumbnail_keeps_the_frame_aspect_when_the_display_is_unknown():
    frame = np.zeros((90, 160, 3), np.uint8)
    assert Image.open(io.BytesIO(encode_thumbnail(frame, None))).size == (240, 135)


def test_encode_thumbnail_rejects_a_frame_that_is_not_rgb_uint8():
    with pytest.raises(ValueError, match="uint8"):
        encode_thumbnail(np.zeros((8, 8, 3), np.float32), None)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        encode_thumbnail(np.zeros((8, 8), np.uint8), None)


def test_write_report_escapes_every_text(tmp_path):
    hostile = "<script>alert(1)</script>"
    pd.DataFrame(
        [(hostile, f'/v/"{hostile}.mp4', 1, 0, f"<img src=x onerror={hostile}>", 0.5)],
        columns=TAGS.columns,
    ).to_parquet(tmp_path / "tags.parquet")
    failure = {"path": hostile, "reason": "<b>bad</b>", "detail": hostile}
    (tmp_path / "failed-0.jsonl").write_text(json.dumps(failure) + "\n")
    page = Path(write_report(str(tmp_path))).read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page and "<b>bad" not in page
    assert 'data-id="&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert "&quot;&lt;script&gt;" in page  # the quote in the path cannot end an attribute


def test_write_report_needs_tags_but_not_segments_or_failures(tmp_path):
    with pytest.raises(FileNotFoundError, match="tags.parquet"):
        write_report(str(tmp_path))
    TAGS.to_parquet(tmp_path / "tags.parquet")
    page = Path(write_report(str(tmp_path))).read_text(encoding="utf-8")
    assert "No failed inputs." in page and page.count("no segments") == 3


def test_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links == [f"thumbnails/{thumbnail_name(THUMBNAILED)}"]
    assert "<script" not in page and "://" not in page


def test_report_shows_a_card_per_video_sorted_by_id(rendered):
    assert list(cards_by_id(rendered)) == sorted(TAGS["id"].unique())
    counts = {count.attrs["data-count"]: count.text for count in rendered.find("count")}
    assert counts == {"videos": "3", "failed": "2"}
    cards = cards_by_id(rendered)
    assert ODD_ID in cards[ODD_ID].text and "/library/with space/<odd>.mkv" in cards[ODD_ID].text
    assert "tagged from records" in cards[FROM_RECORDS].text


def test_report_lists_failed_inputs_with_reason_and_detail(rendered):
    rows = {row.attrs["data-path"]: row for row in rendered.find("failed")}
    assert set(rows) == {failure["path"] for failure in FAILURES}
    assert [cell.text for cell in rows["/library/broken.mp4"].children] == [
        "/library/broken.mp4", "broken", "decode_error", "moov atom not found"
    ]  # fmt: skip
    assert rows["/library/notes.txt"].find("reason")[0].text == "not_video"


def test_report_score_bars_are_drawn_at_score_width(rendered):
    cards = cards_by_id(rendered)
    for video_id, video_tags in TAGS.groupby("id"):
        bars = cards[video_id].find("bar")
        expected = video_tags.sort_values("rank")["score"].tolist()
        assert [float(bar.attrs["data-rendered"]) for bar in bars] == pytest.approx(
            expected, abs=0.01
        )
        printed = [row.find("score")[0].text for row in cards[video_id].find("tag")]
        assert printed == [f"{score:.2f}" for score in expected]


def test_report_timeline_draws_one_block_per_segment(rendered):
    cards = cards_by_id(rendered)
    blocks = [block for card in cards.values() for block in card.find("segment")]
    assert len(blocks) == len(BLOCKS)
    assert cards[ODD_ID].find("segment") == []
    for video_id, start_s, end_s, top_tag, video_end_s in BLOCKS:
        (block,) = [
            block
            for block in cards[video_id].find("segment")
            if float(block.attrs["data-start"]) == start_s
        ]
        assert float(block.attrs["data-end"]) == end_s
        assert top_tag in block.attrs["title"] and block.text == top_tag
        assert float(block.attrs["data-rendered-left"]) == pytest.approx(
            start_s / video_end_s, abs=0.01
        )
        assert float(block.attrs["data-rendered-width"]) == pytest.approx(
            (end_s - start_s) / video_end_s, abs=0.01
        )


def test_report_shows_the_thumbnail_or_a_placeholder(rendered):
    cards = cards_by_id(rendered)
    (image,) = [child for child in cards[THUMBNAILED].children if child.tag == "img"]
    assert image.attrs["data-loaded"] == "yes"
    assert cards[FROM_RECORDS].find("placeholder") and cards[ODD_ID].find("placeholder")


def test_report_screenshot_is_not_blank(report, tmp_path):
    png = browser.screenshot(str(report), str(tmp_path / "report.png"), size=SCREEN_SIZE)
    picture = Image.open(png).convert("RGB")
    assert picture.size == SCREEN_SIZE
    colours = picture.getcolors(maxcolors=SCREEN_SIZE[0] * SCREEN_SIZE[1])
    most_common = max(count for count, _ in colours)
    assert len(colours) > 50 and most_common < 0.9 * SCREEN_SIZE[0] * SCREEN_SIZE[1]
    assert picture.getpixel((5, 5)) == pytest.approx(HEADER_RGB, abs=3)


def test_write_report_shows_file_name_bytes_that_are_not_utf8_escaped(tmp_path):
    TAGS.to_parquet(tmp_path / "tags.parquet")
    failure = {"path": "/v/bad\udcff.mp4", "video_id": "bad\udcff", "reason": "not_a_video"}
    (tmp_path / "failed-0.jsonl").write_text(json.dumps(failure) + "\n")  # \udcff as JSON escape
    page = Path(write_report(str(tmp_path))).read_text(encoding="utf-8")
    assert "/v/bad\\xff.mp4" in page and "bad\\xff" in page
