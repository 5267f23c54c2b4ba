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
from apache_beam.options.pipeline_options import PipelineOptions

from features.formats import DEFAULT_MAX_FRAMES, PCA_FILE
from features.pca import FrameReservoir, PcaTransform, fit_pca
from pipelines import storage
from pipelines.config import ExtractConfig
from pipelines.elements import VideoInput
from pipelines.transforms import NAMESPACE, EmbedVideos, MatchVideos, stable_hash

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


def sample_video_count(config: ExtractConfig) -> int:
    """Enough videos to fill the frame sample if each gives `max_frames` frames."""
    frames_per_video = config.max_frames or DEFAULT_MAX_FRAMES
    return max(1, math.ceil(config.pca_sample_frames / frames_per_video))


def fit_and_write(sample: np.ndarray, dims: int, output: str) -> None:
    if len(sample) == 0:
        raise ValueError("--pca fit: no frames were decoded from the sampled videos")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        pca = fit_pca(sample, dims)
    buffer = io.BytesIO()
    pca.save(buffer)
    storage.write_bytes(storage.join(output, PCA_FILE), buffer.getvalue())
    beam.metrics.Metrics.counter(NAMESPACE, SAMPLE_COUNTER).inc(len(sample))


def run_pca_fit(
    config: ExtractConfig, options: PipelineOptions, frame_size: tuple[int, int]
) -> tuple[PcaTransform, int]:
    """Runs the fitting pass to completion; returns the PCA and how many frames it saw."""
    videos_to_sample = sample_video_count(config)
    pipeline = beam.Pipeline(options=options)
    embedded, _, _ = (
        pipeline
        | "Match" >> MatchVideos(config)
        | "OnePathPerId" >> beam.CombinePerKey(min)
        | "SampleVideos"
        >> beam.combiners.Top.Of(videos_to_sample, key=lambda kv: stable_hash(kv[0]))
        | "Unpack" >> beam.FlatMap(lambda sampled: sampled)
        | "Spread" >> beam.Reshuffle()
        | "ToInput" >> beam.MapTuple(lambda video_id, path: VideoInput(video_id, path, (), False))
        | "Embed" >> EmbedVideos(config, frame_size)
    )
    _ = (
        embedded
        | "Features" >> beam.Map(lambda keyed: keyed[1].inference)
        | "Reservoir"
        >> beam.CombineGlobally(ReservoirCombineFn(config.pca_sample_frames, config.seed))
        | "Fit" >> beam.Map(fit_and_write, config.pca_dims, config.output)
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name(SAMPLE_COUNTER))["counters"]
    sample_frames = sum(counter.committed or 0 for counter in counters)
    pca_bytes = storage.read_bytes(storage.join(config.output, PCA_FILE))
    return PcaTransform.load_npz(io.BytesIO(pca_bytes)), sample_frames
