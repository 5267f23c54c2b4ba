"""`eval_pool`: YouTube-8M metrics of a trained model on frame- or video-level records.

eval_pool --model model/ --data 'features/frame/*.tfrecord' [--predictions out.csv]
"""

import argparse
import json
import os
import sys

import tensorflow as tf

from pooling_models import data, model_dir, staging
from pooling_models.evaluation import evaluate
from pooling_models.train_pool import METRIC_KEYS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval_pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a train_pool model directory")
    parser.add_argument("--data", required=True, help="TFRecord glob")
    parser.add_argument(
        "--predictions", default="", help="write Kaggle VideoId,LabelConfidencePairs"
    )
    parser.add_argument("--metrics_output", default="", help="default: <model>/eval_metrics.json")
    parser.add_argument("--batch_size", type=int, default=64)
    return parser


def run(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    model = staging.local_dir_for(args.model)
    train_config = model_dir.read_train_config(model)
    config = train_config.model
    common = {
        "feature_names": config.feature_names,
        "feature_sizes": config.feature_sizes,
        "num_classes": config.num_classes,
        "batch_size": args.batch_size,
        "training": False,
    }
    records = staging.stage_glob(args.data)
    if config.data_level == "frame":
        dataset = data.frame_dataset(records, max_frames=train_config.max_frames, **common)
    else:
        dataset = data.video_dataset(records, **common)
    keras_model = model_dir.load_model(model)
    metrics = evaluate(keras_model, dataset, config.num_classes, predictions_csv=args.predictions)
    metrics = {key: metrics[key] for key in METRIC_KEYS}
    output = args.metrics_output or os.path.join(model, "eval_metrics.json")
    model_dir.write_json(output, {**metrics, "data": args.data})
    return metrics


def main(argv: list[str] | None = None) -> int:
    try:
        metrics = run(argv)
    except (model_dir.ModelDirError, FileNotFoundError) as error:
        print(f"eval_pool: error: {error}", file=sys.stderr)
        return 2
    except tf.errors.InvalidArgumentError as error:  # a corrupt record file, named
        print(f"eval_pool: error: {error.message}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
