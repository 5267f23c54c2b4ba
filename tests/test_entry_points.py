"""The six console scripts answer `--help` from flags alone: no TensorFlow, Keras or Beam."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPTS = {
    "extract_features": "pipelines.extract_features",
    "tag_videos": "pipelines.tag_videos",
    "train_pool": "pooling_models.train_pool",
    "eval_pool": "pooling_models.eval_pool",
    "make_sample_library": "features.sample_library",
    "vggish_convert": "features.vggish_convert",
}
HEAVY_MODULES = ("tensorflow", "keras", "apache_beam", "pyarrow")


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("module", sorted(SCRIPTS.values()))
def test_help_imports_nothing_heavy(module):
    result = run_python(
        f"""
        import sys
        from {module} import main
        try:
            main(["--help"])
        except SystemExit as done:
            assert done.code == 0, done.code
        print(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "(default:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", sorted(SCRIPTS.values()))
def test_help_works_when_tensorflow_cannot_be_imported(tmp_path: Path, module):
    broken = tmp_path / "tensorflow"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('tensorflow is broken here')\n")
    result = run_python(
        f"""
        from {module} import main
        main(["--help"])
        """,
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"},
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--verbose" in result.stdout
