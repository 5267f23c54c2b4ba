"""`eval_pool`: YouTube-8M metrics of a trained model on frame- or video-level records.

eval_pool --model model/ --eval_data 'features/frame/*.tfrecord' [--predictions out.csv]
"""

import json
import sys
from collections.abc import Sequence

from features import cli
from pooling_models.config import EvalPoolConfig

PROG = "eval_pool"


def build_parser() -> cli.Parser:
    parser = cli.Parser(PROG, __doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="a train_pool model directory (local or gs://)")
    add("--eval_data", required=True, help="TFRecord glob (local or gs://)")
    parser.add_alias("--data", "--eval_data")
    add("--predictions", default="", help="write Kaggle VideoId,LabelConfidencePairs CSV here")
    add("--metrics_output", default="", help="empty: <model>/eval_metrics.json")
    add("--batch_size", type=cli.int_at_least(1), default=64, help="videos per step")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parses `argv` once; returns the exit status (2 for a bad flag, as argparse's)."""
    try:
        args, _ = build_parser().parse(argv)
    except SystemExit as stop:  # --help, or the one-line flag error already printed
        return int(stop.code or 0)
    cli.quiet(args.verbose)

    def body() -> int:
        metrics = run(EvalPoolConfig(**vars(args)))
        print(json.dumps(metrics, indent=2))
        return 0

    return cli.run_main(PROG, body, args.verbose)


def run(config: EvalPoolConfig) -> dict[str, float]:
    """Evaluates, writes `eval_metrics.json` (and predictions); returns the metrics."""
    import tensorflow as tf

    from features import storage
    from features.records import CorruptRecordError
    from pooling_models import data, inputs, model_dir
    from pooling_models.evaluation import NoVideosError, evaluate
    from pooling_models.metrics import RESULT_KEYS

    storage.check_bucket(config.model, "--model")
    storage.check_bucket(config.eval_data, "--eval_data")
    train_config = model_dir.read_train_config(config.model)
    model_config = train_config.model
    storage.check_bucket(config.predictions, "--predictions")
    storage.check_bucket(config.metrics_output, "--metrics_output")
    files = inputs.matched_files(config.eval_data, "--eval_data")
    sizes = dict(zip(model_config.feature_names, model_config.feature_sizes, strict=True))
    inputs.check_records(files, model_config.data_level, sizes, "--eval_data", config.eval_data)
    common = {
        "feature_names": model_config.feature_names,
        "feature_sizes": model_config.feature_sizes,
        "num_classes": model_config.num_classes,
        "batch_size": config.batch_size,
        "training": False,
    }
    records = storage.stage_glob(config.eval_data)
    inputs.check_framing(sorted(tf.io.gfile.glob(records)))
    if model_config.data_level == "frame":
        dataset = data.frame_dataset(records, max_frames=train_config.max_frames, **common)
    else:
        dataset = data.video_dataset(records, **common)
    keras_model = model_dir.load_model(config.model)
    try:
        metrics = evaluate(keras_model, dataset, model_config.num_classes, config.predictions)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, CorruptRecordError) as error:
        raise inputs.explain_data_error(error, f"--eval_data {config.eval_data}") from None
    except NoVideosError as error:
        where = f"--eval_data {config.eval_data}"
        raise cli.UsageError(str(error), where, "pass records that hold videos") from None
    metrics = {key: metrics[key] for key in RESULT_KEYS}
    output = config.metrics_output or storage.join(config.model, model_dir.EVAL_METRICS_FILE)
    model_dir.write_json(output, {**metrics, "data": config.eval_data})
    return metrics


if __name__ == "__main__":
    sys.exit(main())
