"""`train_pool`: fit a video-level multi-label classifier on frame (or video) features.

train_pool --pooling netvlad --train_data 'features/frame/*.tfrecord' --output model/
"""

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from features import cli, storage
from features.lease import DEFAULT_LEASE_TIMEOUT_S
from pooling_models.config import TrainPoolConfig, add_reading_flags, split_names, split_sizes
from pooling_models.model_config import (
    CONV_VARIANTS,
    DATA_LEVELS,
    FUSIONS,
    HEAD_CHOICES,
    NONLOCAL_POOLS,
    POOLING_CHOICES,
)

if TYPE_CHECKING:
    import keras

PROG = "train_pool"
SUMMARY_KEYS = ("gap", "hit_at_1", "hit_at_5", "perr", "map")


def build_parser() -> cli.Parser:
    parser = cli.Parser(PROG, __doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--train_data", required=True, help="TFRecord glob (local or gs://)")
    add("--output", required=True, help="model directory to write (local or gs://)")
    add("--eval_data", default="", help="TFRecord glob; empty: a hold-out of --train_data")
    add("--eval_fraction", type=cli.fraction_open, default=0.1, help="hold-out share, < 1")
    add("--data_level", default="frame", choices=DATA_LEVELS)
    add(
        "--feature_names",
        default="",
        help="comma-separated; empty: the manifest's streams, else rgb",
    )
    add("--feature_sizes", default="", help="comma-separated; empty: from the manifest")
    add("--num_classes", type=cli.int_at_least(0), default=0, help="0: the vocabulary's")
    add("--pooling", default="netvlad", choices=POOLING_CHOICES)
    add(
        "--fusion",
        default="late",
        choices=FUSIONS,
        help="late: pool each feature on its own, then concatenate; early: concatenate the "
        "features per frame, then pool once",
    )
    add(
        "--cluster_size",
        type=cli.int_at_least(1),
        default=64,
        help="clusters per stream; audio pooled beside other streams gets half",
    )
    add("--hidden_size", type=cli.int_at_least(1), default=1024)
    add("--head", default="moe", choices=HEAD_CHOICES)
    add("--num_mixtures", type=cli.int_at_least(1), default=2)
    add("--gating", dest="gating", action="store_true", default=None, help="context gating")
    add("--no_gating", dest="gating", action="store_false", help="no context gating")
    parser.add_alias("--no-gating", "--no_gating")
    add("--conv_variant", default="max", choices=CONV_VARIANTS)
    add("--recurrent_layers", type=cli.int_at_least(1), default=2)
    add("--recurrent_units", type=cli.int_at_least(1), default=1024)
    add(
        "--nonlocal_pool",
        default="netvlad",
        choices=NONLOCAL_POOLS,
        help="what pools the frames after the non-local block (--pooling nonlocal)",
    )
    add(
        "--nonlocal_bottleneck",
        type=cli.int_at_least(0),
        default=0,
        help="width of the non-local block's embeddings; 0 = half the frame width",
    )
    add("--epochs", type=cli.int_at_least(1), default=10)
    add("--batch_size", type=cli.int_at_least(1), default=80, help="videos per step")
    add("--learning_rate", type=cli.positive_float, default=2e-4)
    add("--lr_decay", type=cli.fraction_open, default=0.95, help="factor per epoch")
    add("--clip_norm", type=cli.positive_float, default=1.0)
    add("--patience", type=cli.int_at_least(1), default=3, help="epochs without GAP gain")
    add("--max_frames", type=cli.int_at_least(1), default=TrainPoolConfig.max_frames)
    add("--sample_frames", type=cli.int_at_least(0), default=0, help="0 = all frames")
    add(
        "--shuffle_buffer",
        type=cli.int_at_least(1),
        default=TrainPoolConfig.shuffle_buffer,
        help="records shuffled together in memory (a frame-level record is ~0.35 MB)",
    )
    add_reading_flags(parser)
    add("--mixed_precision", action="store_true", help="float16 pooling, float32 classifier")
    add("--resume", action="store_true", help="continue from <output>/checkpoint")
    add("--overwrite", action="store_true", help="replace an earlier run's model/checkpoint")
    add("--seed", type=cli.int_at_least(0), default=0, help="weights, shuffling, sampling")
    add("--lease_timeout", type=cli.positive_float, default=DEFAULT_LEASE_TIMEOUT_S)
    add("--break_lease", action="store_true", help="take over a stale lease on --output")
    return parser


def config_from_args(values: dict[str, Any]) -> TrainPoolConfig:
    """The parsed flags as a validated TrainPoolConfig (UsageError on a cross-flag rule)."""
    values = dict(values)
    values["feature_names"] = split_names(values["feature_names"])
    values["feature_sizes"] = split_sizes(values["feature_sizes"])
    return TrainPoolConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Parses `argv` once; returns the exit status (2 for a bad flag, as argparse's)."""
    try:
        args, _ = build_parser().parse(argv)
    except SystemExit as stop:  # --help, or the one-line flag error already printed
        return int(stop.code or 0)
    cli.quiet(args.verbose, PROG)

    def body() -> int:
        config = config_from_args(vars(args))
        metrics = run(config)
        summary = " ".join(f"{key} {metrics[key]:.4f}" for key in SUMMARY_KEYS)
        print(f"{PROG}: eval {summary} on {metrics['num_videos']} videos")
        print(f"  model directory: {storage.absolute(config.output)}")
        return 0

    return cli.run_main(
        PROG, body, args.verbose, after_failure=lambda: "rerun with --resume to continue"
    )


def run(
    config: TrainPoolConfig, callbacks: Sequence["keras.callbacks.Callback"] = ()
) -> dict[str, float]:
    """Trains and writes the model directory; returns the eval metrics.

    `callbacks` run after train_pool's own at each epoch (tests interrupt training here).
    """
    from features import lease
    from pooling_models import train_steps

    output = train_steps.prepare_output(config)
    with lease.acquire(output, PROG, config.lease_timeout, config.break_lease):
        train_steps.check_earlier_run(config, output)
        return train_steps.train(config, output, callbacks)


if __name__ == "__main__":
    sys.exit(main())
