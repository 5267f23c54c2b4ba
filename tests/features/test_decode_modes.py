"""--decode fast and --decode_device on real encoded videos: what fast skips, what it keeps,
and the GPU path (compared with the CPU's where this machine has an NVIDIA GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from features import clips
from features.decoding import gpu_decode_problem
from features.frames import DecodeReport, iter_frame_chunks, iter_media_chunks
from features.synthetic_video import read_frame_index, render_index_frame, write_video
from tests.conftest import INDEXED_VIDEO_FPS, INDEXED_VIDEO_FRAMES

# Nearest-frame error allowed in fast mode: x264's B-pyramid leaves at most one skipped frame
# between decoded ones, so a sample strays at most one frame period (0.033 s at 30 fps); the
# product's bound for any B-frame layout up to 3 B-frames is two periods, under 0.1 s.
FAST_ERROR_BOUND_S = 2 / INDEXED_VIDEO_FPS
with_gpu = pytest.mark.skipif(bool(gpu_decode_problem()), reason="no NVIDIA GPU decoder here")
without_gpu = pytest.mark.skipif(not gpu_decode_problem(), reason="this machine has a GPU decoder")


def decode(source: str, **kwargs) -> tuple[dict[str, np.ndarray], DecodeReport]:
    report = DecodeReport()
    chunks = list(iter_frame_chunks(source, report=report, max_frames=0, **kwargs))
    joined = {
        field: np.concatenate([getattr(chunk, field) for chunk in chunks])
        for field in ("frames", "timestamps_s", "frame_times_s")
    }
    return joined, report


def test_fast_decodes_fewer_frames_and_keeps_every_sample_near_its_time(indexed_video):
    exact, exact_report = decode(indexed_video, fps=INDEXED_VIDEO_FPS, decode="exact")
    fast, fast_report = decode(indexed_video, fps=INDEXED_VIDEO_FPS, decode="fast")

    assert exact_report.decoded_frames == INDEXED_VIDEO_FRAMES
    assert fast_report.skipped_frames and not exact_report.skipped_frames
    assert fast_report.decoded_frames < 0.8 * exact_report.decoded_frames  # B-frames skipped
    # The same samples at the same times: rows per video do not change.
    assert fast_report.frames == exact_report.frames == len(fast["frames"])
    np.testing.assert_array_equal(fast["timestamps_s"], exact["timestamps_s"])
    errors = np.abs(fast["frame_times_s"] - fast["timestamps_s"])
    assert 0 < errors.max() <= FAST_ERROR_BOUND_S
    assert fast_report.max_sample_error_s == pytest.approx(errors.max())
    assert exact_report.max_sample_error_s == 0  # 30 fps sampled at 30 fps: every frame once
    # Every chosen picture is the frame it claims to be (no corruption from skipped ones).
    shown = [read_frame_index(frame) for frame in fast["frames"]]
    assert shown == [round(t * INDEXED_VIDEO_FPS) for t in fast["frame_times_s"]]


def test_fast_picks_the_nearest_decoded_frame_at_any_rate(indexed_video):
    exact, _ = decode(indexed_video, fps=7.3, decode="exact")
    fast, report = decode(indexed_video, fps=7.3, decode="fast")
    decoded_times = np.unique(fast["frame_times_s"])
    np.testing.assert_array_equal(fast["timestamps_s"], exact["timestamps_s"])
    # No decoded frame lies nearer to a sample time than the one chosen.
    for target, chosen in zip(fast["timestamps_s"], fast["frame_times_s"], strict=True):
        assert abs(chosen - target) <= abs(decoded_times - target).min() + 1e-9
    assert report.max_sample_error_s <= FAST_ERROR_BOUND_S


def test_vp9_ignores_the_skip_so_fast_equals_exact(tmp_path):
    path = str(tmp_path / "clip.webm")
    write_video(path, (render_index_frame(k, 64, 96) for k in range(45)), codec="libvpx-vp9")
    exact, exact_report = decode(path, fps=10, decode="exact")
    fast, fast_report = decode(path, fps=10, decode="fast")
    assert fast_report.decoded_frames == exact_report.decoded_frames == 45
    np.testing.assert_array_equal(fast["frames"], exact["frames"])
    np.testing.assert_array_equal(fast["frame_times_s"], exact["frame_times_s"])


def test_a_raw_stream_without_timestamps_decodes_exactly(tmp_path):
    """A skipped frame's time cannot be known without timestamps: no frame is skipped."""
    path = str(tmp_path / "clip.h264")
    write_video(path, (render_index_frame(k, 64, 96) for k in range(60)))
    exact, exact_report = decode(path, fps=30, decode="exact")
    fast, fast_report = decode(path, fps=30, decode="fast")
    assert not fast_report.skipped_frames
    assert fast_report.decoded_frames == exact_report.decoded_frames == 60
    np.testing.assert_array_equal(fast["frames"], exact["frames"])


def test_fast_refuses_views_that_need_every_frame(indexed_video):
    with pytest.raises(ValueError, match="clip views"):
        iter_media_chunks(indexed_video, views=[clips.flow_view((64, 64), 4)], decode="fast")
    fovea = [clips.fovea_view((32, 32), 4)]  # one frame per sample: fine
    chunks = list(iter_media_chunks(indexed_video, views=fovea, decode="fast", audio=False))
    assert sum(len(chunk.inputs) for chunk in chunks if isinstance(chunk, clips.ViewChunk)) == 10


def test_unknown_decode_mode_is_refused_at_the_call(indexed_video):
    with pytest.raises(ValueError, match="decode='quick'"):
        iter_frame_chunks(indexed_video, decode="quick")


@without_gpu
def test_gpu_without_a_gpu_decoder_is_refused_at_the_call(indexed_video):
    with pytest.raises(ValueError, match="NVIDIA"):
        iter_frame_chunks(indexed_video, decode_device="gpu")
    _, report = decode(indexed_video, decode_device="auto")  # auto: the CPU here
    assert not report.gpu_decoded and report.frames == 10


@with_gpu
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_gpu_and_cpu_sample_the_same_frames(indexed_video, mode):
    cpu, cpu_report = decode(indexed_video, fps=INDEXED_VIDEO_FPS, decode=mode)
    gpu, gpu_report = decode(indexed_video, fps=INDEXED_VIDEO_FPS, decode=mode, decode_device="gpu")
    assert gpu_report.gpu_decoded and not gpu_report.gpu_fallback
    assert gpu_report.decoded_frames == cpu_report.decoded_frames
    np.testing.assert_array_equal(gpu["frame_times_s"], cpu["frame_times_s"])
    # H.264 decodes bit-exactly; only the colour conversion (NV12 vs planar) may round apart.
    differences = np.abs(gpu["frames"].astype(np.int16) - cpu["frames"])
    assert np.mean(differences <= 2) >= 0.99


@with_gpu
def test_a_profile_the_gpu_refuses_falls_back_to_the_cpu(tmp_path):
    path = str(tmp_path / "clip444.mp4")  # H.264 High 4:4:4: NVDEC decodes 4:2:0 only
    write_video(path, (render_index_frame(k, 64, 96) for k in range(30)), pix_fmt="yuv444p")
    cpu, _ = decode(path, fps=30)
    gpu, report = decode(path, fps=30, decode_device="gpu")
    assert report.gpu_fallback and not report.gpu_decoded
    np.testing.assert_array_equal(gpu["frames"], cpu["frames"])
