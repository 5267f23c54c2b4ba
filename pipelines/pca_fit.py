"""First pass of `--pca fit`: embed a sample of the library and fit the whitening PCA.

Fitting before extraction (rather than alongside it) means every shard of an output is
written in one feature space, and the extraction pass streams without holding raw features.
"""

import io
import itertools
import math
import warnings
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from features import storage
from features.cli import UsageError
from features.formats import DEFAULT_MAX_FRAMES
from features.pca import FrameReservoir, PcaTransform, fit_pca
from features.streams import FeatureSpec
from pipelines.decode_embed import FAILED, SUMMARY, DecodeFrames
from pipelines.elements import VideoInput
from pipelines.model_handler import NAMESPACE, BackboneModelHandler
from pipelines.transforms import stable_hash

SAMPLE_COUNTER = "pca_sample_frames"


class ReservoirCombineFn(beam.CombineFn):
    """A uniform sample of at most `capacity` frame vectors from all embedded chunks."""

    def __init__(self, capacity: int, seed: int) -> None:
        self._capacity = capacity
        self._seeds = itertools.count(seed)

    def create_accumulator(self) -> FrameReservoir:
        # Reservoirs that are merged need distinct seeds, else their choices correlate.
        return FrameReservoir(self._capacity, seed=next(self._seeds))

    def add_input(self, reservoir: FrameReservoir, features: np.ndarray) -> FrameReservoir:
        reservoir.add(features)
        return reservoir

    def merge_accumulators(self, reservoirs: Iterable[FrameReservoir]) -> FrameReservoir:
        merged, *others = reservoirs
        for other in others:
            merged = merged.merge(other)
        return merged

    def extract_output(self, reservoir: FrameReservoir) -> np.ndarray:
        return reservoir.sample()  # [min(capacity, seen), D] float32


def sample_videos(
    videos: list[tuple[str, str]], spec: FeatureSpec, max_frames: int
) -> list[VideoInput]:
    """Enough videos to fill the frame sample if each gives `max_frames` frames, chosen by
    a stable hash of their ids (the same sample on every run over the same library)."""
    frames_per_video = max_frames or DEFAULT_MAX_FRAMES
    count = max(1, math.ceil(spec.pca_sample_frames / frames_per_video))
    chosen = sorted(videos, key=lambda video: stable_hash(video[0]))[:count]
    return [VideoInput(video_id, path, (), False) for video_id, path in chosen]


def fit_and_write(sample: np.ndarray, dims: int, path: str) -> None:
    if len(sample) == 0:
        raise UsageError(
            "no frame could be decoded from the videos sampled for the PCA",
            f"--pca fit {path}",
            "check the dead letter of a run with --pca PATH, or add readable videos",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        pca = fit_pca(sample, dims)
    buffer = io.BytesIO()
    pca.save(buffer)
    storage.write_bytes(path, buffer.getvalue())  # whole or not at all
    beam.metrics.Metrics.counter(NAMESPACE, SAMPLE_COUNTER).inc(len(sample))


def run_pca_fit(
    sample: list[VideoInput],
    spec: FeatureSpec,
    frames_per_batch: int,
    max_frames: int,
    options: PipelineOptions,
    pca_path: str,
) -> tuple[PcaTransform, int]:
    """Runs the fitting pass to completion; returns the PCA and how many frames it saw."""
    pipeline = beam.Pipeline(options=options)
    decoded = (
        pipeline
        | "SampleVideos" >> beam.Create(sample)
        | "Decode"
        >> beam.ParDo(
            DecodeFrames(spec.fps, max_frames, spec.frame_size, frames_per_batch)
        ).with_outputs(FAILED, SUMMARY, main="chunks")
    )
    _ = (
        decoded.chunks
        | "Embed" >> RunInference(BackboneModelHandler(spec, frames_per_batch))
        | "Features" >> beam.FlatMap(lambda keyed: [] if isinstance(keyed[1], str) else [keyed[1]])
        | "Reservoir" >> beam.CombineGlobally(ReservoirCombineFn(spec.pca_sample_frames, spec.seed))
        | "Fit" >> beam.Map(fit_and_write, spec.dims, pca_path)
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name(SAMPLE_COUNTER))["counters"]
    sample_frames = sum(counter.committed or 0 for counter in counters)
    return PcaTransform.load_npz(io.BytesIO(storage.read_bytes(pca_path))), sample_frames
