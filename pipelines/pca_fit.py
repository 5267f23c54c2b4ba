"""The PCAs of an output (pca.npz for rgb, audio_pca.npz for audio): reuse them, copy given
ones, or fit them in a first pass that decodes a sample of the library once and embeds it with
every stream's network, each stream into its own reservoir. An output's committed PCA is never
replaced.

Fitting before extraction (rather than alongside it) means every shard of an output is
written in one feature space, and the extraction pass streams without holding raw features.
"""

import hashlib
import io
import itertools
import math
import re
import warnings
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from features import storage
from features.cli import UsageError
from features.formats import (
    AUDIO_DIMS,
    DEFAULT_MAX_FRAMES,
    RGB_KEY,
    VGGISH_BACKBONE,
)
from features.pca import FrameReservoir, PcaTransform, fit_pca, load_pca
from features.stream_models import stream_feature_dims
from features.streams import FeatureSpec
from features.vggish_pca import is_vggish_pca_file, load_vggish_pca
from framevlad_proto import framevlad_pb2
from pipelines.config import ExtractConfig
from pipelines.decode_embed import chunks_tag, decode_streams
from pipelines.elements import VideoInput
from pipelines.inputs import FoundInputs
from pipelines.model_handler import NAMESPACE, handler_for
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
    videos: list[tuple[str, str]], sample_frames: int, max_frames: int
) -> list[VideoInput]:
    """Enough videos to fill a `sample_frames` sample if each gives `max_frames` frames,
    chosen by a stable hash of their ids (the same sample on every run over the library)."""
    frames_per_video = max_frames or DEFAULT_MAX_FRAMES
    count = max(1, math.ceil(sample_frames / frames_per_video))
    chosen = sorted(videos, key=lambda video: stable_hash(video[0]))[:count]
    return [VideoInput(video_id, path, (), False) for video_id, path in chosen]


def sample_counter(spec: FeatureSpec) -> str:
    """The Beam counter of the rows a stream's fit saw: pca_sample_frames, audio_pca_..."""
    return SAMPLE_COUNTER if spec.name == RGB_KEY else f"{spec.name}_{SAMPLE_COUNTER}"


def fit_and_write(sample: np.ndarray, spec: FeatureSpec, path: str) -> None:
    if len(sample) == 0:
        raise UsageError(
            f"no {spec.name} row could be computed from the videos sampled for its PCA",
            f"{spec.flag('--pca')} fit {path}",
            f"check the dead letter of a run with {spec.flag('--pca')} PATH, or add readable "
            "videos",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        pca = fit_pca(sample, spec.dims)
    buffer = io.BytesIO()
    pca.save(buffer)
    storage.write_bytes(path, buffer.getvalue())  # whole or not at all
    beam.metrics.Metrics.counter(NAMESPACE, sample_counter(spec)).inc(len(sample))


def run_pca_fit(
    sample: list[VideoInput],
    decode: FeatureSpec,
    specs: list[FeatureSpec],
    frames_per_batch: int,
    max_frames: int,
    options: PipelineOptions,
    pca_paths: dict[str, str],
) -> dict[str, tuple[PcaTransform, int]]:
    """Fits every stream of `specs` from ONE decode of the sample (at `decode`'s, i.e.
    rgb's, rate: the other streams' inputs come from the same pass), each from its own
    reservoir; returns each PCA and how many rows it saw, by stream name."""
    pipeline = beam.Pipeline(options=options)
    videos = pipeline | "SampleVideos" >> beam.Create(sample)
    decoded_specs = [decode, *(spec for spec in specs if spec.name != decode.name)]
    decoded = decode_streams(videos, decoded_specs, max_frames, frames_per_batch)
    for spec in specs:
        _ = (
            decoded[chunks_tag(spec.name)]
            | f"Embed {spec.name}" >> RunInference(handler_for(spec, frames_per_batch))
            | f"Features {spec.name}"
            >> beam.FlatMap(lambda keyed: [] if isinstance(keyed[1], str) else [keyed[1]])
            | f"Reservoir {spec.name}"
            >> beam.CombineGlobally(ReservoirCombineFn(spec.pca_sample_frames, spec.seed))
            | f"Fit {spec.name}" >> beam.Map(fit_and_write, spec, pca_paths[spec.name])
        )
    try:
        result = run_to_end(pipeline)
    except UsageError as error:  # Beam appends the step's name to the first argument
        what = re.sub(r" \[while running '[^']*'\]", "", error.what)
        raise UsageError(what, error.where, error.fix) from None
    fitted = {}
    for spec in specs:
        name_filter = MetricsFilter().with_name(sample_counter(spec))
        counters = result.metrics().query(name_filter)["counters"]
        sample_rows = sum(counter.committed or 0 for counter in counters)
        buffer = io.BytesIO(storage.read_bytes(pca_paths[spec.name]))
        fitted[spec.name] = PcaTransform.load_npz(buffer), sample_rows
    return fitted


def named_buffer(path: str) -> io.BytesIO:
    """A file's bytes in memory, named after it (errors that name their file then say which)."""
    buffer = io.BytesIO(storage.read_bytes(path))
    buffer.name = path
    return buffer


def load_pca_file(path: str, flag: str) -> PcaTransform:
    """Our pca.npz, a YouTube-8M PCA folder or VGGish's vggish_pca_params.npz; one that
    fails to load (a torn or foreign file) is one line naming it and the fix."""
    try:
        if storage.is_dir(path):  # YouTube-8M's mean/eigenvecs/eigenvals .npy folder
            return load_pca(storage.stage_dir(path))
        buffer = named_buffer(path)
        if is_vggish_pca_file(buffer):
            return load_vggish_pca(storage.stage_file(path))
        buffer.seek(0)
        return PcaTransform.load_npz(buffer)
    except FileNotFoundError:
        raise UsageError(
            "no such PCA file or folder", f"{flag} {path}", "use auto or fit"
        ) from None
    except Exception as error:  # noqa: BLE001 -- zip, numpy and key errors of a bad file
        raise UsageError(
            f"cannot load the PCA ({type(error).__name__}: {error})",
            path,
            f"delete it or pass {flag.split()[0]} fit",
        ) from error


def feature_dims(spec: FeatureSpec) -> int:
    """Width of the stream's embeddings, the PCA's input."""
    if spec.backbone == VGGISH_BACKBONE:
        return AUDIO_DIMS
    return stream_feature_dims(spec.name, spec.backbone)


def prepare_pcas(
    config: ExtractConfig,
    options: PipelineOptions,
    found: FoundInputs,
    dry_run: bool,
    committed: bool,
) -> dict[str, tuple[framevlad_pb2.PcaInfo, str]]:
    """Loads, reuses or fits each stream's PCA and leaves it in the output, whole; streams
    that need a fit are fitted together, from one decode of one sample.

    The PCA of an output with committed runs is never replaced: its records were whitened
    with it. Returns, by stream, what the manifest records about the PCA and its path in the
    output."""
    prepared, to_fit = {}, []
    for spec in config.specs:
        output_pca = storage.join(config.output, spec.pca_file)
        info = framevlad_pb2.PcaInfo(file=spec.pca_file)
        fit = spec.pca == "fit" or (spec.pca == "auto" and not storage.exists(output_pca))
        if dry_run:
            info.source = "fit (not run: dry run)" if fit else spec.pca
            info.output_dims = spec.dims
        elif fit and committed:
            raise UsageError(
                f"a new {spec.name} PCA fit would replace the one the committed runs' records "
                "were whitened with",
                f"{spec.flag('--pca')} {spec.pca} --skip_existing",
                f"pass {spec.flag('--pca')} auto (or the committed runs' PCA file), or choose "
                "a new --output",
            )
        elif fit:
            to_fit.append(spec)
        prepared[spec.name] = (info, output_pca)
    if dry_run:
        return prepared
    for spec in config.specs:  # given PCAs first: a bad one fails before any fit runs
        if spec not in to_fit:
            finish_pca(spec, *prepared[spec.name], committed, None)
    if to_fit:
        sample_frames = max(spec.pca_sample_frames for spec in to_fit)
        sample = sample_videos(found.videos, sample_frames, config.max_frames)
        paths = {spec.name: prepared[spec.name][1] for spec in to_fit}
        fitted = run_pca_fit(
            sample, config.rgb, to_fit, config.frames_per_batch, config.max_frames, options, paths
        )
        for spec in to_fit:
            info, output_pca = prepared[spec.name]
            pca, info.sample_frames = fitted[spec.name]
            info.source = "fit"
            finish_pca(spec, info, output_pca, committed, pca)
    return prepared


def finish_pca(
    spec: FeatureSpec,
    info: framevlad_pb2.PcaInfo,
    output_pca: str,
    committed: bool,
    pca: PcaTransform | None,
) -> None:
    """Loads a PCA that was not fitted, checks it fits the stream and the committed runs,
    copies a given one into the output, and fills in its sizes and hash."""
    flag = spec.flag("--pca")
    if pca is None and spec.pca == "auto":
        pca, info.source = load_pca_file(output_pca, f"{flag} auto"), "reused"
    elif pca is None:
        pca, info.source = load_pca_file(spec.pca, flag), spec.pca
    dims = feature_dims(spec)
    if pca.input_dims != dims:
        raise UsageError(
            f"the PCA expects {pca.input_dims}-d features, {spec.backbone} gives {dims}",
            f"{flag} {spec.pca}",
            f"pass a PCA fitted on this {spec.name} network, or {flag} fit",
        )
    if committed and info.source != "reused":
        if not same_pca(pca, load_pca_file(output_pca, f"{flag} auto")):
            raise UsageError(
                f"this {spec.name} PCA differs from the one the committed runs' records were "
                "whitened with",
                f"{flag} {spec.pca} --skip_existing",
                f"pass {flag} auto to reuse the committed one, or choose a new --output",
            )
        info.source = "reused"
    elif info.source not in ("fit", "reused"):
        buffer = io.BytesIO()
        pca.save(buffer)
        storage.write_bytes(output_pca, buffer.getvalue())
    info.input_dims, info.output_dims, info.epsilon = pca.input_dims, pca.output_dims, pca.epsilon
    info.sha256 = hashlib.sha256(storage.read_bytes(output_pca)).hexdigest()


def same_pca(first: PcaTransform, second: PcaTransform) -> bool:
    arrays = ("mean", "components", "eigenvalues")
    same_arrays = all(np.array_equal(getattr(first, a), getattr(second, a)) for a in arrays)
    return same_arrays and first.epsilon == second.epsilon
