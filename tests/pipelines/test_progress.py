"""The progress line: plain lines into a pipe, one updating line on a terminal."""

import io
import re
import time

from pipelines import progress
from pipelines.progress import Progress

LINE = re.compile(r"^demo: (\d+)/5 videos, [\d.]+ frames/s(, ETA \d+:\d\d:\d\d)?$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_into_a_pipe_at_the_first_video_every_interval_and_at_the_end():
    stream = io.StringIO()
    with Progress("demo", total=5, stream=stream, interval_s=0.05) as shown:
        progress.report(shown.token, frames=30)
        time.sleep(0.2)  # a few ticks
        for _ in range(4):
            progress.report(shown.token, frames=10)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(LINE.match(line) for line in lines), lines
    assert lines[0].startswith("demo: 1/5 videos") and lines[0].endswith(tuple("0123456789"))
    assert "ETA" in lines[0] and lines[-1].startswith("demo: 5/5 videos")


def test_one_updating_line_on_a_terminal():
    stream = Terminal()
    with Progress("demo", total=5, stream=stream, interval_s=60) as shown:
        progress.report(shown.token, frames=3)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert text.count("\r") == 2  # the first video, then the final count


def test_reports_outside_the_launcher_are_ignored():
    progress.report("no-such-run", frames=10)  # e.g. on a Dataflow worker: nothing to update


def test_no_line_when_no_video_reached_this_process():
    stream = io.StringIO()
    with Progress("demo", total=5, stream=stream, interval_s=60):
        pass  # e.g. --direct_running_mode multi_processing: the workers count elsewhere
    assert stream.getvalue() == ""
