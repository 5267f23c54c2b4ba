"""A progress line for Beam jobs on the local runner, e.g.

    extract_features: 12/40 videos, 35.2 frames/s, ETA 0:01:10

The launcher starts a Progress (it knows the total: inputs are matched before the job) and
the job's decode step (DecodeFrames) tells it of each video as it leaves the decoder; that
step runs in the launcher's process on the local runner (threads or not), and elsewhere finds no
Progress and does nothing (Dataflow shows the Beam counters instead). Printed at the first
video done and at least every `interval_s` after: one `\\r`-updated line on a terminal,
plain lines otherwise.
"""

import datetime
import sys
import threading
import time
import uuid
from typing import TextIO

_active: dict[str, "Progress"] = {}
_active_lock = threading.Lock()


class Progress:
    """Counts videos and frames done; use as a context manager around the job's run."""

    def __init__(
        self, prog: str, total: int, stream: TextIO | None = None, interval_s: float = 10.0
    ) -> None:
        self.token = uuid.uuid4().hex
        self._prog = prog
        self._total = total
        self._stream = stream or sys.stdout
        self._interval_s = interval_s
        self._tty = self._stream.isatty()
        self._lock = threading.Lock()
        self._videos = 0
        self._frames = 0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._printed = False
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> "Progress":
        with _active_lock:
            _active[self.token] = self
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, error_type: type | None, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        with _active_lock:
            _active.pop(self.token, None)
        if error_type is None and self._videos:
            # The final count, right before the summary (no count reached this process
            # when the runner's workers are other processes: then no line is better than 0/N).
            self.print_line()
        if self._printed and self._tty:
            self._stream.write("\n")  # the summary starts on a line of its own
            self._stream.flush()

    def video_done(self, frames: int) -> None:
        with self._lock:
            self._videos += 1
            self._frames += frames
            first = self._videos == 1
        if first:
            self.print_line()

    def line(self) -> str:
        with self._lock:
            videos, frames = self._videos, self._frames
        elapsed = max(time.monotonic() - self._started, 1e-9)
        line = f"{self._prog}: {videos}/{self._total} videos, {frames / elapsed:.1f} frames/s"
        if 0 < videos < self._total:
            remaining = elapsed * (self._total - videos) / videos
            line += f", ETA {datetime.timedelta(seconds=round(remaining))}"
        return line

    def print_line(self) -> None:
        line = self.line()
        with self._lock:
            self._printed = True
            if self._tty:
                self._stream.write("\r\x1b[K" + line)
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.print_line()


def report(token: str, frames: int) -> None:
    """One video left the decoder (ok or not); a no-op outside the launcher's process."""
    with _active_lock:
        progress = _active.get(token)
    if progress is not None:
        progress.video_done(frames)
