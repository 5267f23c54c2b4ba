"""`eval_pool`: YouTube-8M metrics of a trained model (or an ensemble) on frame- or
video-level records.

eval_pool --model model/ --eval_data 'features/frame/*.tfrecord' [--predictions out.csv]
eval_pool --model rgb_model/ --model flow_model/ --ensemble_weights 0.6,0.4 --eval_data ...
"""

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from features import cli
from pooling_models.config import EvalPoolConfig, add_reading_flags, split_weights

if TYPE_CHECKING:
    import tensorflow as tf

    from features.shard_cache import ShardCache
    from pooling_models.model_dir import TrainConfig

PROG = "eval_pool"


def build_parser() -> cli.Parser:
    parser = cli.Parser(PROG, __doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--model",
        required=True,
        action="append",
        help="a train_pool model directory (local or gs://); repeat it for an ensemble, "
        "whose probabilities are averaged (the models must share a vocabulary)",
    )
    add(
        "--ensemble_weights",
        default="",
        help="comma-separated, one per --model, scaled to sum to 1; empty: equal weights",
    )
    add("--eval_data", required=True, help="TFRecord glob (local or gs://)")
    parser.add_alias("--data", "--eval_data")
    add("--predictions", default="", help="write Kaggle VideoId,LabelConfidencePairs CSV here")
    add(
        "--metrics_output",
        default="",
        help="empty: <model>/eval_metrics.json for one --model; an ensemble's metrics are "
        "only printed unless this names a file",
    )
    add("--batch_size", type=cli.int_at_least(1), default=64, help="videos per step")
    add_reading_flags(parser)
    return parser


def config_from_args(values: dict[str, Any]) -> EvalPoolConfig:
    """The parsed flags as a validated EvalPoolConfig (UsageError on a cross-flag rule)."""
    values = dict(values)
    first, *others = values.pop("model")
    values["ensemble_weights"] = split_weights(values["ensemble_weights"])
    return EvalPoolConfig(model=first, extra_models=tuple(others), **values)


def main(argv: Sequence[str] | None = None) -> int:
    """Parses `argv` once; returns the exit status (2 for a bad flag, as argparse's)."""
    try:
        args, _ = build_parser().parse(argv)
    except SystemExit as stop:  # --help, or the one-line flag error already printed
        return int(stop.code or 0)
    cli.quiet(args.verbose, PROG)

    def body() -> int:
        metrics = run(config_from_args(vars(args)))
        print(json.dumps(metrics, indent=2))
        return 0

    return cli.run_main(PROG, body, args.verbose)


def run(config: EvalPoolConfig) -> dict[str, float]:
    """Evaluates, writes the metrics file (and predictions); returns the metrics.

    One model: `<model>/eval_metrics.json` unless --metrics_output. An ensemble: each model
    reads the features it was trained on from the same records, and the metrics are those
    of the averaged probabilities, written only to --metrics_output (with the models and
    their weights)."""
    from features import storage
    from pooling_models import ensemble, model_dir

    for url in config.models:
        storage.check_bucket(url, "--model")
    storage.check_bucket(config.eval_data, "--eval_data")
    train_configs = [model_dir.read_train_config(url) for url in config.models]
    if len(config.models) > 1:  # before any model or record is read
        classes = [train_config.model.num_classes for train_config in train_configs]
        ensemble.check_same_vocabulary(config.models, classes)
    storage.check_bucket(config.predictions, "--predictions")
    storage.check_bucket(config.metrics_output, "--metrics_output")
    metrics = _evaluate(config, train_configs)
    if len(config.models) == 1:
        output = config.metrics_output or storage.join(config.model, model_dir.EVAL_METRICS_FILE)
        model_dir.write_json(output, {**metrics, "data": config.eval_data})
    elif config.metrics_output:
        ensemble_fields = {"models": list(config.models), "weights": list(config.model_weights)}
        model_dir.write_json(
            config.metrics_output, {**metrics, "data": config.eval_data, **ensemble_fields}
        )
    return metrics


def _evaluate(config: EvalPoolConfig, train_configs: list["TrainConfig"]) -> dict[str, float]:
    """The metrics of the model, or of the ensemble's averaged probabilities."""
    import tensorflow as tf

    from features.records import CorruptRecordError
    from features.shard_cache import ShardCache
    from pooling_models import inputs, model_dir
    from pooling_models.evaluation import (
        NoVideosError,
        ensemble_batches,
        evaluate,
        evaluate_batches,
    )
    from pooling_models.metrics import RESULT_KEYS

    files = inputs.matched_files(config.eval_data, "--eval_data")
    for train_config in train_configs:
        model_config = train_config.model
        sizes = dict(zip(model_config.feature_names, model_config.feature_sizes, strict=True))
        inputs.check_records(files, model_config.data_level, sizes, "--eval_data", config.eval_data)
    inputs.check_framing(files)
    # Streamed, never staged (see features.record_stream); each model reads the records once.
    cache = ShardCache(config.cache_dir, config.cache_max_bytes) if config.cache_dir else None
    datasets = [_dataset(config, train_config, cache) for train_config in train_configs]
    keras_models = [model_dir.load_model(url) for url in config.models]
    num_classes = train_configs[0].model.num_classes
    try:
        if len(keras_models) == 1:
            metrics = evaluate(keras_models[0], datasets[0], num_classes, config.predictions)
        else:
            batches = ensemble_batches(keras_models, datasets, config.model_weights)
            metrics = evaluate_batches(batches, num_classes, config.predictions)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, CorruptRecordError) as error:
        raise inputs.explain_data_error(error, f"--eval_data {config.eval_data}") from None
    except NoVideosError as error:
        where = f"--eval_data {config.eval_data}"
        raise cli.UsageError(str(error), where, "pass records that hold videos") from None
    return {key: metrics[key] for key in RESULT_KEYS}


def _dataset(
    config: EvalPoolConfig, train_config: "TrainConfig", cache: "ShardCache | None"
) -> "tf.data.Dataset":
    """--eval_data as one model reads it: its features, its clip length."""
    from pooling_models import data

    model_config = train_config.model
    common = {
        "feature_names": model_config.feature_names,
        "feature_sizes": model_config.feature_sizes,
        "num_classes": model_config.num_classes,
        "batch_size": config.batch_size,
        "training": False,
        "parallel_reads": config.parallel_reads,
        "cache": cache,
    }
    if model_config.data_level == "frame":
        return data.frame_dataset(config.eval_data, max_frames=train_config.max_frames, **common)
    return data.video_dataset(config.eval_data, **common)


if __name__ == "__main__":
    sys.exit(main())
