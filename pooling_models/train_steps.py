"""The steps of a `train_pool` run, in order: the output, the features, the data, the fit,
the model directory. Every check that can fail runs before the first epoch."""

import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import keras
import tensorflow as tf

from features import manifest, storage
from features.cli import UsageError
from features.formats import AUDIO_KEY, RGB_KEY
from features.records import CorruptRecordError
from features.shard_cache import ShardCache
from features.streams import MEAN_PREFIX
from framevlad_proto import framevlad_pb2
from pooling_models import checkpoint, data, inputs, model_dir
from pooling_models.builder import build_model
from pooling_models.config import TrainPoolConfig
from pooling_models.evaluation import evaluate
from pooling_models.metrics import RESULT_KEYS
from pooling_models.model_config import ModelConfig
from pooling_models.training import FitSettings, fit

# YouTube-8M's sizes, used when the data has no manifest.
_KNOWN_SIZES = {RGB_KEY: 1024, AUDIO_KEY: 128}
_RUN_FILES = (
    model_dir.MODEL_FILE,
    model_dir.TRAIN_CONFIG_FILE,
    model_dir.METRICS_FILE,
    model_dir.EVAL_METRICS_FILE,
)


@dataclass(frozen=True)
class Features:
    """What the model reads, resolved from flags, the manifest or the records."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    num_classes: int
    manifest_path: str | None
    manifest: framevlad_pb2.Manifest | None


def prepare_output(config: TrainPoolConfig) -> str:
    """The output as an absolute path or URL, after the checks that need no lease."""
    output = storage.absolute(config.output)
    storage.check_bucket(output, "--output")
    if storage.exists(output) and not storage.is_dir(output):
        raise UsageError("--output is an existing file", f"--output {output}", "pass a folder")
    return output


def check_earlier_run(config: TrainPoolConfig, output: str) -> None:
    """Refuses to replace an earlier run's model or checkpoint unless asked to."""
    where = f"--output {output}"
    checkpoints = checkpoint.find_checkpoints(output)
    finished = [name for name in _RUN_FILES if storage.exists(storage.join(output, name))]
    if config.overwrite:
        checkpoint.delete_checkpoints(output)
        for name in finished:
            storage.delete(storage.join(output, name))
    elif checkpoints and not config.resume:
        raise UsageError(
            f"{output} holds the checkpoint of an interrupted run ({checkpoints[0]})",
            where,
            "pass --resume to continue it, or --overwrite to start over",
        )
    elif finished and not checkpoints:
        raise UsageError(
            f"{output} holds the model of an earlier run",
            where,
            "pass --overwrite to replace it, or choose another --output",
        )


def train(
    config: TrainPoolConfig, output: str, callbacks: Sequence[keras.callbacks.Callback]
) -> dict[str, float]:
    """Everything after the output checks; returns the eval metrics."""
    keras.utils.set_random_seed(config.seed)  # same flags, same data -> same model
    storage.check_bucket(config.train_data, "--train_data")
    storage.check_bucket(config.eval_data, "--eval_data")
    train_files = inputs.matched_files(config.train_data, "--train_data")
    eval_files = inputs.matched_files(config.eval_data, "--eval_data") if config.eval_data else []
    inputs.check_records(train_files, config.data_level, {}, "--train_data", config.train_data)
    if eval_files:
        inputs.check_records(eval_files, config.data_level, {}, "--eval_data", config.eval_data)
    inputs.check_framing(train_files + eval_files)
    # Records are streamed (gs:// shard by shard), never staged: see features.record_stream.
    train_pattern, eval_pattern = config.train_data, config.eval_data
    cache = shard_cache(config.cache_dir, config.cache_max_bytes)
    try:
        features = resolve_features(config, train_pattern, eval_pattern, cache)
        sizes = dict(zip(features.names, features.sizes, strict=True))
        inputs.check_records(
            train_files, config.data_level, sizes, "--train_data", config.train_data
        )
        model_config = build_model_config(config, features)
        check_not_empty(config, features, train_pattern, eval_pattern, cache)
        train_dataset, eval_dataset = datasets(
            config, features, train_pattern, eval_pattern, cache=cache
        )
        return _fit_and_write(
            config, output, features, model_config, (train_dataset, eval_dataset), callbacks
        )
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, CorruptRecordError) as error:
        raise inputs.explain_data_error(error, f"--train_data {config.train_data}") from None


def _fit_and_write(
    config: TrainPoolConfig,
    output: str,
    features: Features,
    model_config: ModelConfig,
    data_sets: tuple[tf.data.Dataset, tf.data.Dataset],
    callbacks: Sequence[keras.callbacks.Callback],
) -> dict[str, float]:
    train_dataset, eval_dataset = data_sets
    if features.manifest is not None and features.manifest_path:
        model_dir.copy_feature_files(features.manifest_path, features.manifest, output)
    else:
        note = f"--train_data {config.train_data}: {model_dir.NO_MANIFEST_NOTE}"
        warnings.warn(note, stacklevel=1)
    work_dir = tempfile.mkdtemp(prefix="framevlad-train-") if storage.is_remote(output) else output
    settings = FitSettings(
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_decay_per_epoch=config.lr_decay,
        clip_norm=config.clip_norm,
        patience=config.patience,
        mixed_precision=config.mixed_precision,
        resume=config.resume,
        checkpoint_output=output,
    )
    model, history = fit(model_config, train_dataset, eval_dataset, work_dir, settings, callbacks)
    model_dir.save_model(model, output)
    metrics = evaluate(model, eval_dataset, features.num_classes)
    metrics = {key: metrics[key] for key in RESULT_KEYS}
    model_dir.write_json(storage.join(output, model_dir.METRICS_FILE), metrics)
    train_config = model_dir.TrainConfig(
        model=model_config,
        max_frames=config.max_frames,
        train_data=config.train_data,
        eval_data=config.eval_data,
        eval_fraction=config.eval_fraction if config.holds_out else 0.0,
        raw_video_tagging=features.manifest is not None,
        note="" if features.manifest is not None else model_dir.NO_MANIFEST_NOTE,
        history=history,
    )
    model_dir.write_train_config(output, train_config)  # last: marks the directory complete
    if work_dir != output and os.path.isdir(os.path.join(work_dir, "logs")):
        storage.upload_dir(os.path.join(work_dir, "logs"), storage.join(output, "logs"))
    checkpoint.delete_checkpoints(output)
    return metrics


def shard_cache(cache_dir: str, max_bytes: int) -> ShardCache | None:
    """The --cache_dir shard cache (None without one)."""
    return ShardCache(cache_dir, max_bytes) if cache_dir else None


def resolve_features(
    config: TrainPoolConfig,
    train_pattern: str,
    eval_pattern: str,
    cache: ShardCache | None = None,
) -> Features:
    """Names, sizes and class count from the flags, else the manifest, else the records."""
    manifest_path = manifest.find_manifest(config.train_data)
    features = manifest.read_manifest(manifest_path) if manifest_path else None
    if config.eval_data and manifest_path and features is not None:
        eval_path = manifest.find_manifest(config.eval_data)
        if eval_path and model_dir.vocabulary_text(
            eval_path, manifest.read_manifest(eval_path)
        ) != model_dir.vocabulary_text(manifest_path, features):
            raise UsageError(
                "its vocabulary differs from --train_data's",
                f"--eval_data {config.eval_data}",
                "extract both with the same --vocabulary",
            )
    stream_names = [stream.name for stream in features.streams] if features is not None else []
    names = config.feature_names_for(stream_names)
    sizes = config.feature_sizes or _sizes_from(names, features)
    num_classes = config.num_classes or _classes_from(
        config, features, (train_pattern, eval_pattern), cache
    )
    return Features(names, sizes, num_classes, manifest_path, features)


def _sizes_from(names: tuple[str, ...], features: framevlad_pb2.Manifest | None) -> tuple[int, ...]:
    known = dict(_KNOWN_SIZES)
    if features is not None:
        known.update(features.feature_sizes)
        known.update({stream.name: stream.dims for stream in features.streams if stream.dims})
    sizes = []
    for name in names:
        base = name.removeprefix(MEAN_PREFIX)
        if base not in known:
            raise UsageError(
                f"the size of feature {name} is unknown", f"--feature_names {name}",
                "pass --feature_sizes",
            )  # fmt: skip
        sizes.append(int(known[base]))
    return tuple(sizes)


def _classes_from(
    config: TrainPoolConfig,
    features: framevlad_pb2.Manifest | None,
    patterns: tuple[str, str],
    cache: ShardCache | None,
) -> int:
    if features is not None and (features.num_classes or features.vocabulary.size):
        return int(features.num_classes or features.vocabulary.size)
    largest = max(
        inputs.largest_label(pattern, config.data_level, cache) for pattern in patterns if pattern
    )
    if largest < 0:
        raise UsageError(
            "the records hold no labels", f"--train_data {config.train_data}",
            "pass --num_classes, or extract with --labels",
        )  # fmt: skip
    return largest + 1


def build_model_config(config: TrainPoolConfig, features: Features) -> ModelConfig:
    """The ModelConfig; invalid combinations fail here, before any data is read."""
    try:
        model_config = ModelConfig(
            pooling=config.pooling,
            num_classes=features.num_classes,
            feature_names=features.names,
            feature_sizes=features.sizes,
            data_level=config.data_level,
            cluster_size=config.cluster_size,
            hidden_size=config.hidden_size,
            gating=config.gating,
            head=config.head,
            num_mixtures=config.num_mixtures,
            conv_variant=config.conv_variant,
            recurrent_layers=config.recurrent_layers,
            recurrent_units=config.recurrent_units,
            nonlocal_pool=config.nonlocal_pool,
            nonlocal_bottleneck=config.nonlocal_bottleneck,
            fusion=config.fusion,
        )
        build_model(model_config)  # builds in milliseconds; catches invalid combinations
    except ValueError as error:
        first_line = str(error).splitlines()[0]
        raise UsageError(first_line, f"--pooling {config.pooling}", "change the flags") from None
    return model_config


def datasets(
    config: TrainPoolConfig,
    features: Features,
    train_pattern: str,
    eval_pattern: str,
    shuffle_training: bool = True,
    cache: ShardCache | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, eval): --eval_data, else a stable hash hold-out of --train_data."""
    common = {
        "feature_names": features.names,
        "feature_sizes": features.sizes,
        "num_classes": features.num_classes,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "shuffle_buffer": config.shuffle_buffer,  # used by the training side only
        "parallel_reads": config.parallel_reads,
        "cache": cache,
    }
    if config.data_level == "frame":
        common["max_frames"] = config.max_frames

    def make(pattern: str, training: bool, **split: object) -> tf.data.Dataset:
        if config.data_level == "video":
            return data.video_dataset(pattern, training=training, **common, **split)
        extra = {"sample_frames": config.sample_frames} if training else {}
        return data.frame_dataset(pattern, training=training, **common, **split, **extra)

    if eval_pattern:
        return make(train_pattern, shuffle_training), make(eval_pattern, False)
    holdout = {"eval_fraction": config.eval_fraction}
    return (
        make(train_pattern, shuffle_training, split="train", **holdout),
        make(train_pattern, False, split="eval", **holdout),
    )


def check_not_empty(
    config: TrainPoolConfig,
    features: Features,
    train_pattern: str,
    eval_pattern: str,
    cache: ShardCache | None = None,
) -> None:
    """Fails up front when either side of the split holds no video. Reads unshuffled, one
    video at a time, until each side shows one (the whole data only when one is empty)."""
    probe = replace(config, batch_size=1, sample_frames=0)
    train_probe, eval_probe = datasets(
        probe, features, train_pattern, eval_pattern, False, cache=cache
    )
    eval_empty = inputs.is_empty(eval_probe)
    if not eval_empty and not inputs.is_empty(train_probe):
        return
    total = inputs.count_records(train_pattern, cache)
    if eval_empty:
        if config.eval_data:
            where, fix = f"--eval_data {config.eval_data}", "pass records that hold videos"
        else:
            where = f"--eval_fraction {config.eval_fraction:g}"
            fix = "pass a larger --eval_fraction (e.g. 0.3), or --eval_data"
        what = f"the evaluation data holds no videos (--train_data has {total})"
        raise UsageError(what, where, fix)
    raise UsageError(
        f"the training data holds no videos after the hold-out (--train_data has {total})",
        f"--train_data {config.train_data}",
        "pass more records, a smaller --eval_fraction, or --eval_data",
    )
