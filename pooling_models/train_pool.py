"""`train_pool`: fit a video-level multi-label classifier on frame (or video) features.

train_pool --pooling netvlad --train_data 'features/frame/*.tfrecord' --output model/
"""

import argparse
import os
import sys
import tempfile
import warnings

import keras
import tensorflow as tf

from features.formats import AUDIO_KEY, DEFAULT_MAX_FRAMES, MEAN_RGB_KEY, RGB_KEY
from pooling_models import data, model_dir, staging
from pooling_models.builder import POOLING_CHOICES, ModelConfig, build_model
from pooling_models.evaluation import evaluate
from pooling_models.label_scan import largest_label
from pooling_models.training import FitSettings, fit

# YouTube-8M's sizes, used when the data has no manifest.
_KNOWN_SIZES = {RGB_KEY: 1024, AUDIO_KEY: 128}
METRIC_KEYS = ("gap", "hit_at_1", "hit_at_5", "perr", "map", "num_videos")


class UsageError(ValueError):
    """A flag or path that cannot work; reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train_pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pooling", default="netvlad", choices=POOLING_CHOICES)
    parser.add_argument("--train_data", required=True, help="TFRecord glob")
    parser.add_argument("--eval_data", default="", help="TFRecord glob; default: a hold-out")
    parser.add_argument("--eval_fraction", type=float, default=0.1)
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--data_level", default="frame", choices=("frame", "video"))
    parser.add_argument("--feature_names", default="", help="default rgb (video: mean_rgb)")
    parser.add_argument("--feature_sizes", default="", help="default: from the manifest")
    parser.add_argument("--num_classes", type=int, default=0, help="default: the vocabulary")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=80)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--lr_decay", type=float, default=0.95, help="per epoch")
    parser.add_argument("--clip_norm", type=float, default=1.0)
    parser.add_argument("--patience", type=int, default=3, help="epochs without GAP gain")
    parser.add_argument("--cluster_size", type=int, default=64)
    parser.add_argument("--hidden_size", type=int, default=1024)
    parser.add_argument("--head", default="moe", choices=("logistic", "moe"))
    parser.add_argument("--num_mixtures", type=int, default=2)
    parser.add_argument("--gating", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--conv_variant", default="max", choices=("max", "tconv"))
    parser.add_argument("--recurrent_layers", type=int, default=2)
    parser.add_argument("--recurrent_units", type=int, default=1024)
    parser.add_argument("--max_frames", type=int, default=DEFAULT_MAX_FRAMES)
    parser.add_argument("--sample_frames", type=int, default=0, help="0 = all frames")
    parser.add_argument("--mixed_precision", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--seed", type=int, default=0, help="weights init, shuffling, sampling")
    return parser


def feature_spec(
    args: argparse.Namespace, manifest: dict | None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    default_name = RGB_KEY if args.data_level == "frame" else MEAN_RGB_KEY
    names = tuple(filter(None, (args.feature_names or default_name).split(",")))
    if args.feature_sizes:
        try:
            sizes = tuple(int(size) for size in args.feature_sizes.split(","))
        except ValueError as error:
            raise UsageError(f"--feature_sizes {args.feature_sizes}: {error}") from error
        if len(sizes) != len(names):
            raise UsageError(f"--feature_sizes {args.feature_sizes}: one size per feature name")
        return names, sizes
    known = dict(_KNOWN_SIZES, **(manifest or {}).get("feature_sizes", {}))
    sizes = []
    for name in names:
        base = name.removeprefix("mean_")
        if base not in known:
            raise UsageError(f"--feature_names {name}: size unknown, pass --feature_sizes")
        sizes.append(int(known[base]))
    return names, tuple(sizes)


def find_manifests(args: argparse.Namespace) -> tuple[str | None, str | None]:
    train_manifest = model_dir.find_manifest(args.train_data)
    eval_manifest = model_dir.find_manifest(args.eval_data) if args.eval_data else None
    if eval_manifest and model_dir.vocabulary_text(eval_manifest) != model_dir.vocabulary_text(
        train_manifest
    ):
        raise UsageError(
            f"--eval_data {args.eval_data}: its vocabulary differs from --train_data's; "
            "extract both with the same --vocabulary"
        )
    return train_manifest, eval_manifest


def count_classes(args: argparse.Namespace, manifest: dict | None) -> int:
    if args.num_classes:
        return args.num_classes
    if manifest and manifest.get("num_classes"):
        return int(manifest["num_classes"])
    largest = largest_label(args.train_data, args.data_level)
    if args.eval_data:
        largest = max(largest, largest_label(args.eval_data, args.data_level))
    if largest < 0:
        raise UsageError(f"--train_data {args.train_data}: no labels; pass --num_classes")
    return largest + 1


def datasets(args: argparse.Namespace, names, sizes, num_classes: int):
    """(train, eval) datasets: --eval_data, else a stable hash hold-out of --train_data."""
    common = {"feature_names": names, "feature_sizes": sizes, "num_classes": num_classes}
    common["batch_size"] = args.batch_size
    if args.data_level == "frame":
        common["max_frames"] = args.max_frames

        def make(pattern, training, **split):
            extra = {"sample_frames": args.sample_frames} if training else {}
            return data.frame_dataset(
                pattern, training=training, seed=args.seed, **common, **split, **extra
            )
    else:

        def make(pattern, training, **split):
            return data.video_dataset(pattern, training=training, seed=args.seed, **common, **split)

    if args.eval_data:
        return make(args.train_data, True), make(args.eval_data, False)
    holdout = {"eval_fraction": args.eval_fraction}
    return (
        make(args.train_data, True, split="train", **holdout),
        make(args.train_data, False, split="eval", **holdout),
    )


def model_config(args: argparse.Namespace, names, sizes, num_classes: int) -> ModelConfig:
    try:
        config = ModelConfig(
            pooling=args.pooling,
            num_classes=num_classes,
            feature_names=names,
            feature_sizes=sizes,
            data_level=args.data_level,
            cluster_size=args.cluster_size,
            hidden_size=args.hidden_size,
            gating=args.gating,
            head=args.head,
            num_mixtures=args.num_mixtures,
            conv_variant=args.conv_variant,
            recurrent_layers=args.recurrent_layers,
            recurrent_units=args.recurrent_units,
        )
        build_model(config)  # builds in milliseconds; catches invalid combinations up front
    except ValueError as error:
        raise UsageError(f"--pooling {args.pooling}: {error}") from error
    return config


def check_ranges(args: argparse.Namespace) -> None:
    for flag in ("epochs", "batch_size", "cluster_size", "hidden_size", "num_mixtures"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} {getattr(args, flag)}: must be >= 1")
    if not args.eval_data and not 0 < args.eval_fraction < 1:
        raise UsageError(f"--eval_fraction {args.eval_fraction}: must be in (0, 1)")
    if args.max_frames < 1 or args.sample_frames < 0:
        raise UsageError("--max_frames must be >= 1 and --sample_frames >= 0")


def run(argv: list[str] | None = None) -> dict[str, float]:
    """Trains and writes the model directory; returns the eval metrics."""
    args = build_parser().parse_args(argv)
    check_ranges(args)
    keras.utils.set_random_seed(args.seed)  # same flags, same data -> same model
    train_manifest, _ = find_manifests(args)
    data_urls = {"train_data": args.train_data, "eval_data": args.eval_data}
    args.train_data = staging.stage_glob(args.train_data)
    args.eval_data = staging.stage_glob(args.eval_data) if args.eval_data else ""
    remote_output = args.output if staging.is_gcs(args.output) else ""
    if remote_output:  # written locally, uploaded when complete
        args.output = tempfile.mkdtemp(prefix="framevlad-model-")
    manifest = model_dir.read_manifest_dict(train_manifest) if train_manifest else None
    names, sizes = feature_spec(args, manifest)
    num_classes = count_classes(args, manifest)
    config = model_config(args, names, sizes, num_classes)
    train_dataset, eval_dataset = datasets(args, names, sizes, num_classes)
    os.makedirs(args.output, exist_ok=True)
    if train_manifest:
        model_dir.copy_feature_files(train_manifest, args.output)
    else:
        warnings.warn(f"--train_data {args.train_data}: {model_dir.NO_MANIFEST_NOTE}", stacklevel=1)
    settings = FitSettings(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        lr_decay_per_epoch=args.lr_decay,
        clip_norm=args.clip_norm,
        patience=args.patience,
        mixed_precision=args.mixed_precision,
        resume=args.resume,
    )
    model, history = fit(config, train_dataset, eval_dataset, args.output, settings)
    model.save(os.path.join(args.output, model_dir.MODEL_FILE))
    metrics = evaluate(model, eval_dataset, num_classes)
    model_dir.write_json(
        os.path.join(args.output, model_dir.METRICS_FILE),
        {key: metrics[key] for key in METRIC_KEYS},
    )
    train_config = model_dir.TrainConfig(
        model=config,
        max_frames=args.max_frames,
        train_data=data_urls["train_data"],
        eval_data=data_urls["eval_data"],
        eval_fraction=0.0 if args.eval_data else args.eval_fraction,
        raw_video_tagging=train_manifest is not None,
        note="" if train_manifest else model_dir.NO_MANIFEST_NOTE,
        history=history,
    )
    with open(os.path.join(args.output, model_dir.TRAIN_CONFIG_FILE), "w") as out:
        out.write(train_config.to_json())
    if remote_output:
        staging.upload_dir(args.output, remote_output)
    return metrics


def main(argv: list[str] | None = None) -> int:
    output = build_parser().parse_args(argv).output
    try:
        metrics = run(argv)
    except (UsageError, model_dir.ModelDirError, FileNotFoundError) as error:
        print(f"train_pool: error: {error}", file=sys.stderr)
        return 2
    except tf.errors.InvalidArgumentError as error:  # a corrupt record file, named
        print(f"train_pool: error: {error.message}", file=sys.stderr)
        return 2
    summary = " ".join(f"{key} {metrics[key]:.4f}" for key in METRIC_KEYS[:-1])
    print(f"train_pool: eval {summary} on {metrics['num_videos']} videos")
    print(f"  model directory: {os.path.abspath(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
