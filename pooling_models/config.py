"""Typed configs of `train_pool` and `eval_pool`, with their cross-field rules in one place.

Light (no TensorFlow): the entry points parse flags into these before any heavy import, and
a rule that spans several flags is checked here, once, as Model Garden's configs declare
theirs beside the fields. Single-flag ranges are checked by the flag types (features.cli).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from features import cli
from features.cli import UsageError
from features.formats import DEFAULT_MAX_FRAMES, RGB_KEY
from features.lease import DEFAULT_LEASE_TIMEOUT_S
from features.streams import MEAN_PREFIX

DEFAULT_EVAL_FRACTION = 0.1
DEFAULT_PARALLEL_READS = 16  # as features.record_stream's (kept light: no TensorFlow here)
DEFAULT_SHUFFLE_BUFFER = 1024
DEFAULT_CACHE_MAX_GB = 50.0
_GB = 10**9


@dataclass(frozen=True)
class TrainPoolConfig:
    """Everything `train_pool` needs; `feature_names`, `feature_sizes` and `num_classes`
    empty / 0 mean "from the data's manifest" (or the records' labels): see
    `feature_names_for`."""

    train_data: str
    output: str
    eval_data: str = ""
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    data_level: str = "frame"
    feature_names: tuple[str, ...] = ()
    feature_sizes: tuple[int, ...] = ()
    num_classes: int = 0
    pooling: str = "netvlad"
    cluster_size: int = 64
    hidden_size: int = 1024
    head: str = "moe"
    num_mixtures: int = 2
    gating: bool | None = None
    conv_variant: str = "max"
    recurrent_layers: int = 2
    recurrent_units: int = 1024
    nonlocal_pool: str = "netvlad"
    nonlocal_bottleneck: int = 0
    fusion: str = "late"
    epochs: int = 10
    batch_size: int = 80
    learning_rate: float = 2e-4
    lr_decay: float = 0.95
    clip_norm: float = 1.0
    patience: int = 3
    max_frames: int = DEFAULT_MAX_FRAMES
    sample_frames: int = 0
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    parallel_reads: int = DEFAULT_PARALLEL_READS
    cache_dir: str = ""
    cache_max_gb: float = DEFAULT_CACHE_MAX_GB
    mixed_precision: bool = False
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT_S
    break_lease: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.feature_names:
            self._check_sizes(self.feature_names)
        if not self.eval_data and not 0 < self.eval_fraction < 1:
            raise UsageError(
                "the hold-out fraction must lie in (0, 1)",
                f"--eval_fraction {self.eval_fraction:g}",
                "pass e.g. --eval_fraction 0.2, or --eval_data for a separate evaluation set",
            )
        if self.resume and self.overwrite:
            raise UsageError(
                "--resume continues the checkpoint that --overwrite deletes",
                "--resume --overwrite",
                "pass one of them",
            )
        check_cache_dir(self.cache_dir)

    @property
    def cache_max_bytes(self) -> int:
        return round(self.cache_max_gb * _GB)

    def feature_names_for(self, stream_names: Sequence[str]) -> tuple[str, ...]:
        """The features to train on: --feature_names, else every stream the data's manifest
        lists (`stream_names`, rgb first: rgb,audio -> frame rgb,audio, video
        mean_rgb,mean_audio), else rgb (official records carry no manifest)."""
        names = self.feature_names
        if not names:
            names = tuple(stream_names) or (RGB_KEY,)
            if self.data_level == "video":
                names = tuple(MEAN_PREFIX + name for name in names)
            self._check_sizes(names)
        return names

    def _check_sizes(self, names: tuple[str, ...]) -> None:
        if self.feature_sizes and len(self.feature_sizes) != len(names):
            sizes = ",".join(map(str, self.feature_sizes))
            raise UsageError(
                f"{len(self.feature_sizes)} sizes for {len(names)} feature names",
                f"--feature_sizes {sizes}",
                f"give one size per name in --feature_names {','.join(names)}",
            )

    @property
    def holds_out(self) -> bool:
        """Whether the evaluation videos are a hash hold-out of --train_data."""
        return not self.eval_data


@dataclass(frozen=True)
class EvalPoolConfig:
    """Everything `eval_pool` needs.

    model, extra_models: the model directories (`--model`, repeated); more than one is an
      ensemble whose probabilities are averaged with `model_weights`.
    ensemble_weights: as given (one per model, >= 0); empty = equal weights.
    metrics_output: empty means `<model>/eval_metrics.json` for one model (written into
      its folder, local or gs://); an ensemble's metrics belong to no one model's folder,
      so they are only printed unless this names a file.
    """

    model: str
    eval_data: str
    predictions: str = ""
    metrics_output: str = ""
    batch_size: int = 64
    verbose: bool = False
    extra_models: tuple[str, ...] = ()
    ensemble_weights: tuple[float, ...] = ()
    parallel_reads: int = DEFAULT_PARALLEL_READS
    cache_dir: str = ""
    cache_max_gb: float = DEFAULT_CACHE_MAX_GB

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_models", tuple(self.extra_models))
        object.__setattr__(self, "ensemble_weights", tuple(self.ensemble_weights))
        normalized_weights(self.ensemble_weights, len(self.models))
        check_cache_dir(self.cache_dir)

    @property
    def cache_max_bytes(self) -> int:
        return round(self.cache_max_gb * _GB)

    @property
    def models(self) -> tuple[str, ...]:
        """Every --model, in the order given."""
        return (self.model, *self.extra_models)

    @property
    def model_weights(self) -> tuple[float, ...]:
        """One weight per model, summing to 1."""
        return normalized_weights(self.ensemble_weights, len(self.models))


def add_reading_flags(parser: cli.Parser) -> None:
    """The flags of how records are read, alike in train_pool and eval_pool."""
    add = parser.add_argument
    add(
        "--parallel_reads",
        type=cli.int_at_least(1),
        default=DEFAULT_PARALLEL_READS,
        help="record files (gs:// shards) streamed at once, their records interleaved",
    )
    add(
        "--cache_dir",
        default="",
        help="local folder keeping gs:// shards once read, for later epochs and runs; "
        "empty: stream them every time",
    )
    add(
        "--cache_max_gb",
        type=cli.positive_float,
        default=DEFAULT_CACHE_MAX_GB,
        help="size cap of --cache_dir (its earlier files included); shards beyond it stream",
    )


def check_cache_dir(cache_dir: str) -> None:
    """The shard cache is local disk: a URL there would copy a bucket into a bucket."""
    if "://" in cache_dir:
        raise UsageError(
            "the shard cache must be a local folder", f"--cache_dir {cache_dir}",
            "pass a local folder, or no --cache_dir to stream every epoch",
        )  # fmt: skip


def split_names(text: str) -> tuple[str, ...]:
    """`--feature_names rgb,audio` -> ("rgb", "audio")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def split_sizes(text: str, flag: str = "--feature_sizes") -> tuple[int, ...]:
    """`--feature_sizes 1024,128` -> (1024, 128); each a positive integer."""
    sizes = []
    for part in split_names(text):
        if not part.isdigit() or int(part) < 1:
            raise UsageError(
                f"{part!r} is not a positive integer", f"{flag} {text}", "e.g. 1024,128"
            )
        sizes.append(int(part))
    return tuple(sizes)


def split_weights(text: str, flag: str = "--ensemble_weights") -> tuple[float, ...]:
    """`--ensemble_weights 0.5,0.5` -> (0.5, 0.5); each a finite number >= 0."""
    weights = []
    for part in split_names(text):
        try:
            weight = float(part)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(
                f"{part!r} is not a finite number >= 0", f"{flag} {text}", "e.g. 0.5,0.5"
            )
        weights.append(weight)
    return tuple(weights)


def normalized_weights(weights: Sequence[float], count: int) -> tuple[float, ...]:
    """One weight per model, scaled to sum to 1: `weights` as --ensemble_weights gave them
    (empty: equal weights). UsageError when they do not pair with the models or sum to 0."""
    if not weights:
        return (1.0 / count,) * count
    where = f"--ensemble_weights {','.join(f'{weight:g}' for weight in weights)}"
    if len(weights) != count:
        plural = "s" if count > 1 else ""
        raise UsageError(
            f"{len(weights)} weights for {count} model{plural}",
            where,
            "give one weight per --model",
        )
    total = math.fsum(weights)
    if not total > 0:
        raise UsageError("the weights sum to 0", where, "give at least one model a positive weight")
    return tuple(weight / total for weight in weights)
