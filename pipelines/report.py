"""A static HTML page that shows what `tag_videos` wrote: thumbnails, tags, timelines, failures.

The page is one file with inline CSS, relative thumbnail links and no scripts or external URLs,
so a copied output folder opens from file:// on any laptop and can be archived with a run.
"""

import hashlib
import html
import io
import json

import numpy as np
import pandas as pd
from PIL import Image

from features import storage

REPORT_DIR = "report"
THUMBNAIL_DIR = "thumbnails"  # under REPORT_DIR, so the page links it relatively
THUMBNAIL_MAX_SIDE = 240  # px; the longer side, which keeps cards one size for any aspect
THUMBNAIL_QUALITY = 85
GOLDEN_ANGLE_DEGREES = 137.508  # neighbouring label indices get far-apart hues


def printable(text: str) -> str:
    """An id or path as tag_videos writes it in text (CSV, Parquet, HTML): bytes of a file
    name that are not UTF-8 (surrogate escapes) become `\\xNN`, so every output stays
    valid UTF-8 and the name still shows which file it was."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def thumbnail_name(video_id: str) -> str:
    """File name of a video's thumbnail: ids may hold '/', '..' or be too long for a file."""
    return hashlib.sha1(video_id.encode("utf-8")).hexdigest() + ".jpg"


def encode_thumbnail(frame: np.ndarray, display_size: tuple[int, int] | None) -> bytes:
    """JPEG of `frame` [H, W, 3] uint8, reshaped to the video's display aspect.

    Decoded frames may have been squashed to a backbone's square input, so the aspect comes
    from `display_size` = (height, width) of the upright original; None or (0, 0) means unknown
    and keeps the frame's own aspect. The longer side becomes THUMBNAIL_MAX_SIDE.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"thumbnail frame: want [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
    height, width = display_size if display_size and min(display_size) > 0 else frame.shape[:2]
    scale = THUMBNAIL_MAX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow: (w, h)
    image = Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS)
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", quality=THUMBNAIL_QUALITY)
    return encoded.getvalue()


def write_report(output: str, shown_as: str = "") -> str:
    """Writes `<output>/report/index.html` from a tag_videos output (a folder or gs:// prefix)
    and returns its path; the page is written whole or not at all. The header names
    `shown_as` (default `output`): where the files will be once a staged run is committed.

    tags.parquet is required; segments.parquet and failed-*.jsonl are optional because a run
    may have no segment head or no failures. Only thumbnails present under the output are
    linked, so a card never points at a picture another run left behind.
    """
    tags_path = storage.join(output, "tags.parquet")
    if not storage.exists(tags_path):
        raise FileNotFoundError(f"{tags_path}: not found; is {output} a tag_videos output?")
    tags = _read_parquet(tags_path)
    segments_path = storage.join(output, "segments.parquet")
    segments = _read_parquet(segments_path) if storage.exists(segments_path) else None
    thumbnail_dir = storage.join(output, REPORT_DIR, THUMBNAIL_DIR)
    thumbnails = {path.rsplit("/", 1)[-1] for path in storage.match(f"{thumbnail_dir}/*.jpg")}
    failures = _read_failures(output)
    page = render_report(tags, segments, failures, thumbnails, shown_as or output)
    index_path = storage.join(output, REPORT_DIR, "index.html")
    storage.write_text(index_path, page)
    return index_path


def render_report(
    tags: pd.DataFrame,
    segments: pd.DataFrame | None,
    failures: list[dict[str, str]],
    thumbnails: set[str],
    source: str,
) -> str:
    """The page: a card per tagged video (sorted by id), then the failed inputs.

    `thumbnails` holds the file names present under report/thumbnails/; `source` is the
    output folder shown in the header.
    """
    segments_by_id = dict(tuple(segments.groupby("id", sort=False))) if segments is not None else {}
    cards = []
    for video_id, video_tags in tags.groupby("id", sort=True):
        name = thumbnail_name(str(video_id))
        cards.append(
            _card(str(video_id), video_tags, segments_by_id.get(video_id), name, name in thumbnails)
        )
    return _PAGE.format(
        css=_CSS,
        videos=len(cards),
        failed=len(failures),
        source=html.escape(storage.absolute(source)),
        cards="\n".join(cards) or '<p class="empty">No videos were tagged.</p>',
        failures=_failed_table(failures),
    )


def _read_parquet(path: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(path)))


def _read_failures(output: str) -> list[dict[str, str]]:
    """Rows of every failed-*.jsonl; proto3 JSON omits empty fields, hence the defaults."""
    failures = []
    for path in storage.match(storage.join(output, "failed-*.jsonl")):
        for line in storage.read_text(path).split("\n"):
            if line.strip():
                row = json.loads(line)
                keys = ("path", "video_id", "reason", "detail")
                failures.append({key: printable(str(row.get(key, ""))) for key in keys})
    return sorted(failures, key=lambda row: (row["path"], row["video_id"]))


def _card(
    video_id: str,
    tags: pd.DataFrame,
    segments: pd.DataFrame | None,
    thumbnail: str,
    has_thumbnail: bool,
) -> str:
    """One <article> per video: picture, id and path, top tags, segment timeline."""
    if has_thumbnail:
        picture = f'<img class="thumb" src="{THUMBNAIL_DIR}/{thumbnail}" alt="">'
    else:
        picture = '<div class="thumb placeholder">no thumbnail</div>'
    paths = [path for path in tags["path"].astype(str) if path]
    where = html.escape(paths[0]) if paths else '<span class="muted">tagged from records</span>'
    rows = "\n".join(_tag_row(tag) for tag in tags.sort_values("rank").itertuples(index=False))
    return (
        f'<article class="video" data-id="{html.escape(video_id)}">{picture}'
        f'<div class="body"><h2>{html.escape(video_id)}</h2><p class="path">{where}</p>'
        f'<table class="tags">{rows}</table>{_timeline(segments)}</div></article>'
    )


def _tag_row(tag: tuple) -> str:
    score = float(tag.score)
    name = html.escape(str(tag.label_name))
    return (
        f'<tr class="tag" data-label="{int(tag.label_index)}"><td class="rank">{int(tag.rank)}</td>'
        f'<td class="label" title="{name}">{name}</td>'
        f'<td><div class="bar" data-score="{score:.4f}"><span style="width:{_percent(score)}%;'
        f'background:{_label_colour(int(tag.label_index))}"></span></div></td>'
        f'<td class="score">{score:.2f}</td></tr>'
    )


def _timeline(segments: pd.DataFrame | None) -> str:
    """A strip with one block per segment, placed by its times relative to the video's end."""
    if segments is None or segments.empty:
        return '<p class="muted">no segments</p>'
    end_s = float(segments["end_s"].max())
    blocks = []
    ranked = segments.sort_values("score", ascending=False)
    for (start_s, stop_s), labels in ranked.groupby(["start_s", "end_s"], sort=True):
        top = labels.iloc[0]
        described = ", ".join(
            f"{label.label_name} {label.score:.2f}" for label in labels.itertuples(index=False)
        )
        title = f"{start_s:.1f}–{stop_s:.1f} s: {described}"
        left = _percent(start_s / end_s) if end_s > 0 else 0.0
        width = _percent((stop_s - start_s) / end_s) if end_s > 0 else 100.0
        blocks.append(
            f'<div class="segment" data-start="{start_s:g}" data-end="{stop_s:g}" '
            f'data-label="{int(top.label_index)}" title="{html.escape(title)}" '
            f'style="left:{left}%;width:{width}%;background:{_label_colour(int(top.label_index))}">'
            f"{html.escape(str(top.label_name))} {float(top.score):.2f}</div>"
        )
    return (
        f'<div class="timeline" data-end="{end_s:g}">{"".join(blocks)}</div>'
        f'<div class="axis"><span>0 s</span><span>{end_s:.1f} s</span></div>'
    )


def _failed_table(failures: list[dict[str, str]]) -> str:
    if not failures:
        return '<p class="muted">No failed inputs.</p>'
    rows = "\n".join(
        f'<tr class="failed" data-path="{html.escape(row["path"])}">'
        f"<td>{html.escape(row['path'])}</td><td>{html.escape(row['video_id'])}</td>"
        f'<td class="reason">{html.escape(row["reason"])}</td>'
        f"<td>{html.escape(row['detail'])}</td></tr>"
        for row in failures
    )
    return (
        '<table class="failures"><tr><th>path</th><th>id</th><th>reason</th><th>detail</th></tr>'
        f"{rows}</table>"
    )


def _percent(fraction: float) -> float:
    """A CSS percentage, clipped so that a stray score or time never spills out of its box."""
    return round(min(max(float(fraction), 0.0), 1.0) * 100.0, 2)


def _label_colour(label_index: int) -> str:
    return f"hsl({label_index * GOLDEN_ANGLE_DEGREES % 360:.0f}, 62%, 48%)"


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #222; }
header { background: #1f2937; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .source { color: #9ca3af; font-size: 12px; word-break: break-all; }
main { padding: 16px 24px; }
article.video { display: flex; gap: 16px; background: #fff; border-radius: 8px;
  padding: 12px; margin-bottom: 12px; box-shadow: 0 1px 2px rgba(0, 0, 0, .12); }
.thumb { width: 240px; height: 240px; object-fit: contain; background: #111; flex: none;
  border-radius: 4px; }
.placeholder { display: flex; align-items: center; justify-content: center; color: #888;
  background: repeating-linear-gradient(45deg, #e5e7eb 0 10px, #f3f4f6 10px 20px); }
.body { flex: 1; min-width: 0; }
.body h2 { margin: 0; font-size: 16px; word-break: break-all; }
.path { margin: 2px 0 8px; color: #555; font-family: monospace; word-break: break-all; }
.muted { color: #888; }
table.tags { border-collapse: collapse; table-layout: fixed; width: 100%; max-width: 480px; }
table.tags td { padding: 2px 6px; }
td.rank { color: #888; width: 1.5em; }
td.label { width: 10em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
div.bar { height: 12px; background: #eef0f3; }
div.bar span { display: block; height: 100%; }
td.score { font-variant-numeric: tabular-nums; width: 3em; }
.timeline { position: relative; height: 28px; margin-top: 12px; background: #eef0f3;
  border-radius: 4px; overflow: hidden; }
.segment { position: absolute; top: 0; bottom: 0; box-sizing: border-box; color: #fff;
  font-size: 11px; line-height: 28px; padding: 0 4px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; border-right: 1px solid #fff; }
.axis { display: flex; justify-content: space-between; color: #888; font-size: 11px; }
table.failures { border-collapse: collapse; background: #fff; width: 100%; }
table.failures th, table.failures td { border: 1px solid #ddd; padding: 4px 8px;
  text-align: left; vertical-align: top; word-break: break-all; }
td.reason { color: #b91c1c; font-weight: 600; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>framevlad tags</title><style>{css}</style></head>
<body><header><h1>framevlad tags</h1>
<p><b class="count" data-count="videos">{videos}</b> videos tagged ·
<b class="count" data-count="failed">{failed}</b> failed</p>
<p class="source">{source}</p></header>
<main>{cards}
<h2>Failed inputs</h2>{failures}</main></body></html>
"""
