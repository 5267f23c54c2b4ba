"""The PCA of an output: reuse it, copy a given one, or fit it in a first pass that embeds a
sample of the library. An output's committed PCA is never replaced.

Fitting before extraction (rather than alongside it) means every shard of an output is
written in one feature space, and the extraction pass streams without holding raw features.
"""

import hashlib
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

from features import backbones, storage
from features.cli import UsageError
from features.formats import DEFAULT_MAX_FRAMES, PCA_FILE, RGB_KEY
from features.pca import FrameReservoir, PcaTransform, fit_pca, load_pca
from features.streams import FeatureSpec
from framevlad_proto import framevlad_pb2
from pipelines.config import ExtractConfig
from pipelines.decode_embed import FAILED, SUMMARY, DecodeFrames
from pipelines.elements import VideoInput
from pipelines.inputs import FoundInputs
from pipelines.model_handler import NAMESPACE, BackboneModelHandler
from pipelines.transforms import run_to_end, stable_hash

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
    result = run_to_end(pipeline)
    counters = result.metrics().query(MetricsFilter().with_name(SAMPLE_COUNTER))["counters"]
    sample_frames = sum(counter.committed or 0 for counter in counters)
    return PcaTransform.load_npz(io.BytesIO(storage.read_bytes(pca_path))), sample_frames


def pca_file(spec: FeatureSpec) -> str:
    return PCA_FILE if spec.name == RGB_KEY else f"pca_{spec.name}.npz"


def named_buffer(path: str) -> io.BytesIO:
    """A file's bytes in memory, named after it (errors that name their file then say which)."""
    buffer = io.BytesIO(storage.read_bytes(path))
    buffer.name = path
    return buffer


def load_pca_file(path: str, flag: str) -> PcaTransform:
    """A PCA that fails to load (a torn or foreign file) is one line naming it and the fix."""
    try:
        if storage.is_dir(path):  # YouTube-8M's mean/eigenvecs/eigenvals .npy folder
            return load_pca(storage.stage_dir(path))
        return PcaTransform.load_npz(named_buffer(path))
    except FileNotFoundError:
        raise UsageError(
            "no such PCA file or folder", f"{flag} {path}", "use auto or fit"
        ) from None
    except Exception as error:  # noqa: BLE001 -- zip, numpy and key errors of a bad file
        raise UsageError(
            f"cannot load the PCA ({type(error).__name__}: {error})",
            path,
            "delete it or pass --pca fit",
        ) from error


def prepare_pca(
    config: ExtractConfig,
    spec: FeatureSpec,
    options: PipelineOptions,
    found: FoundInputs,
    dry_run: bool,
    committed: bool,
) -> tuple[framevlad_pb2.PcaInfo, str]:
    """Loads, reuses or fits the stream's PCA and leaves it in the output, whole.

    The PCA of an output with committed runs is never replaced: its records were whitened
    with it. Returns what the manifest records about the PCA and its path in the output."""
    output_pca = storage.join(config.output, pca_file(spec))
    info = framevlad_pb2.PcaInfo(file=pca_file(spec))
    fit = spec.pca == "fit" or (spec.pca == "auto" and not storage.exists(output_pca))
    if dry_run:
        info.source = "fit (not run: dry run)" if fit else spec.pca
        info.output_dims = spec.dims
        return info, output_pca
    if fit and committed:
        raise UsageError(
            "a new PCA fit would replace the one the committed runs' records were whitened with",
            f"--pca {spec.pca} --skip_existing",
            "pass --pca auto (or the committed runs' PCA file), or choose a new --output",
        )
    if fit:
        sample = sample_videos(found.videos, spec, config.max_frames)
        pca, info.sample_frames = run_pca_fit(
            sample, spec, config.frames_per_batch, config.max_frames, options, output_pca
        )
        info.source = "fit"
    elif spec.pca == "auto":
        pca, info.source = load_pca_file(output_pca, "--pca auto"), "reused"
    else:
        pca, info.source = load_pca_file(spec.pca, "--pca"), spec.pca
    feature_dims = backbones.BACKBONES[spec.backbone].feature_dims
    if pca.input_dims != feature_dims:
        raise UsageError(
            f"the PCA expects {pca.input_dims}-d features, {spec.backbone} gives {feature_dims}",
            f"--pca {spec.pca}",
            "pass a PCA fitted on this backbone, or --pca fit",
        )
    if committed and info.source != "reused":
        if not same_pca(pca, load_pca_file(output_pca, "--pca auto")):
            raise UsageError(
                "this PCA differs from the one the committed runs' records were whitened with",
                f"--pca {spec.pca} --skip_existing",
                "pass --pca auto to reuse the committed one, or choose a new --output",
            )
        info.source = "reused"
    elif info.source not in ("fit", "reused"):
        buffer = io.BytesIO()
        pca.save(buffer)
        storage.write_bytes(output_pca, buffer.getvalue())
    info.input_dims, info.output_dims, info.epsilon = pca.input_dims, pca.output_dims, pca.epsilon
    info.sha256 = hashlib.sha256(storage.read_bytes(output_pca)).hexdigest()
    return info, output_pca


def same_pca(first: PcaTransform, second: PcaTransform) -> bool:
    arrays = ("mean", "components", "eigenvalues")
    same_arrays = all(np.array_equal(getattr(first, a), getattr(second, a)) for a in arrays)
    return same_arrays and first.epsilon == second.epsilon
