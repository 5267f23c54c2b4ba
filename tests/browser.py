"""Debian's headless Chromium, for tests that check what a generated page really renders.

A missing browser is an error, never a skip: `make test` installs it (`make browser`), and a
report test that quietly skipped would let a page that does not render pass CI.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile

CHROMIUM = "chromium"  # Debian package and binary name
TIMEOUT_S = 60.0
# Offline and quiet: no sync, updates, QUIC or first-run pings; a page under test must not
# reach the network, and a sandbox needs privileges that CI containers do not grant.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB; Chromium crashes when it fills
    "--hide-scrollbars",
)


def find_chromium() -> str:
    """Path of the chromium binary; raises with the way to install it when there is none."""
    path = shutil.which(CHROMIUM)
    if path is None:
        raise FileNotFoundError(
            f"{CHROMIUM}: not on PATH; install it with `make browser` (apt-get install chromium)"
        )
    return path


def dump_dom(html_path: str | os.PathLike[str], timeout_s: float = TIMEOUT_S) -> str:
    """The page's DOM serialized after its load event (and after any inline scripts ran)."""
    return _run(html_path, ("--dump-dom",), timeout_s)


def screenshot(
    html_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    size: tuple[int, int] = (1200, 1600),
    timeout_s: float = TIMEOUT_S,
) -> str:
    """Renders the top `size` = (width, height) pixels of the page to `png_path`; returns it."""
    width, height = size
    png = os.path.abspath(png_path)
    _run(html_path, (f"--screenshot={png}", f"--window-size={width},{height}"), timeout_s)
    if not os.path.exists(png):
        raise RuntimeError(f"{CHROMIUM} --screenshot={png}: exited without writing it")
    return png


def _run(html_path: str | os.PathLike[str], arguments: tuple[str, ...], timeout_s: float) -> str:
    """Runs one headless Chromium on `html_path` with a fresh profile; returns its stdout.

    Chromium forks zygote and renderer processes, so it runs in its own session and a timeout
    kills that whole process group rather than leaving orphans behind.
    """
    url = pathlib.Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        command = [find_chromium(), *FLAGS, f"--user-data-dir={profile}", *arguments, url]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(
                f"{CHROMIUM} {' '.join(arguments)} {url}: over {timeout_s} s"
            ) from None
    if process.returncode != 0:
        raise RuntimeError(
            f"{CHROMIUM} {' '.join(arguments)} {url}: exit {process.returncode}\n{stderr[-2000:]}"
        )
    return stdout
