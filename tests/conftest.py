"""Session fixtures that write small real videos once, shared by every test that reads them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from features.synthetic_video import render_index_frame, write_video
from tests import gcs_emulator

if TYPE_CHECKING:
    from tests.extraction import Extracted

INDEXED_VIDEO_FPS = 30
INDEXED_VIDEO_FRAMES = 300  # 10 s; span 299 / 30 s from the first frame to the last
INDEXED_VIDEO_SIZE = (120, 160)  # (height, width)


@pytest.fixture(scope="session")
def indexed_video(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 10 s, 30 fps H.264 mp4 whose frame k shows k (see read_frame_index)."""
    path = str(tmp_path_factory.mktemp("videos") / "indexed_30fps.mp4")
    frames = (render_index_frame(k, *INDEXED_VIDEO_SIZE) for k in range(INDEXED_VIDEO_FRAMES))
    write_video(path, frames, fps=INDEXED_VIDEO_FPS)
    return path


@pytest.fixture(scope="session")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Extracted:
    """The sample library plus every kind of broken input, extracted once with `tiny`."""
    from tests.extraction import extract, make_library  # Beam and TensorFlow: only when used

    library = make_library(tmp_path_factory.mktemp("library"))
    output = tmp_path_factory.mktemp("features")
    return extract(library, output, "--labels", str(library / "labels.csv"))


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gs://framevlad-test on a real local emulator; STORAGE_EMULATOR_HOST set meanwhile, and
    Google default credentials that need no network (Beam would look for them for 25 s)."""
    folder = tmp_path_factory.mktemp("gcs")
    with (
        gcs_emulator.running_emulator(folder / "emulator.log") as host,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("STORAGE_EMULATOR_HOST", host)
        patch.setenv("GOOGLE_APPLICATION_CREDENTIALS", gcs_emulator.default_credentials(folder))
        gcs_emulator.client().create_bucket(gcs_emulator.BUCKET)
        yield f"gs://{gcs_emulator.BUCKET}"
