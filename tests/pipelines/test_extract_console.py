"""What a user sees: the real console script, with stdout a pipe (not a terminal)."""

import re
import subprocess
from pathlib import Path

from tests.extraction import sample_videos, tiny_args

SCRIPT = Path(__file__).parents[2] / ".venv/bin/extract_features"
# Small PCAs: a 3-video sample fits them without a (rightly shown) rank warning.
SMALL_PCAS = ("--pca_dims", "8", "--audio_pca_dims", "8")
PROGRESS = re.compile(r"^extract_features: (\d+)/(\d+) videos, [\d.]+ frames/s")
NOISE = (
    "absl::InitializeLog",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
    "RuntimeWarning",
    "RankWarning",
    "Resource module is not available",
    "input ran out of data",
    "Traceback",
)


def test_console_shows_progress_then_the_summary_and_no_noise(tmp_path):
    library = sample_videos(tmp_path / "library", 3)
    command = [str(SCRIPT), *tiny_args(library, tmp_path / "out", *SMALL_PCAS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    progress = [number for number, line in enumerate(lines) if PROGRESS.match(line)]
    summary = next(n for n, line in enumerate(lines) if " videos ok, " in line)
    assert progress and progress[0] < summary
    assert PROGRESS.match(lines[progress[-1]]).groups() == ("3", "3")
    for noise in NOISE:
        assert noise not in done.stdout + done.stderr, noise
    assert done.stderr == ""


def test_a_write_failure_during_the_run_is_one_line_on_the_console(tmp_path):
    library = sample_videos(tmp_path / "library", 2)
    output = tmp_path / "out"
    output.mkdir()
    (output / "frame").write_text("a file where the frame-level shards must go")
    command = [str(SCRIPT), *tiny_args(library, output, *SMALL_PCAS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("extract_features: error: ") and str(output / "frame") in line
    assert line.endswith("nothing was committed; rerun to resume")
