"""Unreadable inputs of each kind, written for real, shared by decoder and pipeline tests."""

import numpy as np

from features.synthetic_video import write_audio


def write_empty(path: str) -> None:
    open(path, "wb").close()


def write_not_media(path: str) -> None:
    with open(path, "wb") as out:
        out.write(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())


def write_text(path: str) -> None:
    """FFmpeg's tty demuxer would happily 'decode' this as ANSI art."""
    with open(path, "w") as out:
        out.write("these are meeting notes, not a video\n" * 50)


def write_audio_only(path: str) -> None:
    write_audio(path, seconds=1.0)


def zero_media_payload(path: str) -> None:
    """Keeps a faststart mp4's index (moov before mdat) and zeroes every coded frame."""
    with open(path, "r+b") as video_file:
        media_start = video_file.read().index(b"mdat") + 4
        size = video_file.tell()
        video_file.seek(media_start)
        video_file.write(bytes(size - media_start))


def cut_copy(source: str, target: str, fraction: float) -> None:
    """The first `fraction` of the bytes, as an interrupted download leaves a file."""
    with open(source, "rb") as whole:
        data = whole.read()
    with open(target, "wb") as cut:
        cut.write(data[: int(len(data) * fraction)])
