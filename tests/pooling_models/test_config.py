"""Typed job configs: cross-flag rules in one place, parsing without TensorFlow."""

import subprocess
import sys

import pytest

from features.cli import UsageError
from pooling_models.config import TrainPoolConfig, split_sizes
from pooling_models.train_pool import build_parser, config_from_args

BASE = ["--train_data", "data/*.tfrecord", "--output", "model"]


def parse(*flags: str) -> TrainPoolConfig:
    args, _ = build_parser().parse([*BASE, *flags])
    return config_from_args(vars(args))


def test_defaults_and_feature_names_by_level():
    assert parse().feature_names == ()  # resolved against the data's manifest
    assert parse().feature_names_for([]) == ("rgb",)  # no manifest: official records
    assert parse().feature_names_for(["rgb", "audio"]) == ("rgb", "audio")
    video = parse("--data_level", "video")
    assert video.feature_names_for([]) == ("mean_rgb",)
    assert video.feature_names_for(["rgb", "audio"]) == ("mean_rgb", "mean_audio")
    assert parse("--feature_names", "rgb").feature_names_for(["rgb", "audio"]) == ("rgb",)
    config = parse("--feature_names", "rgb,audio", "--feature_sizes", "1024,128")
    assert config.feature_names == ("rgb", "audio") and config.feature_sizes == (1024, 128)
    assert config.batch_size == 80 and config.holds_out


def test_sizes_must_pair_with_the_manifest_streams():
    config = parse("--feature_sizes", "1024")
    assert config.feature_names_for(["rgb"]) == ("rgb",)
    with pytest.raises(UsageError) as raised:
        config.feature_names_for(["rgb", "audio"])
    assert raised.value.where == "--feature_sizes 1024"


@pytest.mark.parametrize(
    ("flags", "where"),
    [
        (["--feature_names", "rgb,audio", "--feature_sizes", "1024"], "--feature_sizes 1024"),
        (["--feature_sizes", "12x"], "--feature_sizes 12x"),
        (["--eval_fraction", "1"], "--eval_fraction 1"),
        (["--resume", "--overwrite"], "--resume --overwrite"),
    ],
)
def test_cross_flag_rules_are_usage_errors(flags, where):
    with pytest.raises(UsageError) as raised:
        parse(*flags)
    assert raised.value.where == where


def test_eval_fraction_one_is_fine_with_eval_data():
    assert not parse("--eval_fraction", "1", "--eval_data", "other/*").holds_out


def test_split_sizes():
    assert split_sizes("1024, 128") == (1024, 128) and split_sizes("") == ()


def test_entry_points_import_no_tensorflow():
    script = (
        "import sys, pooling_models.train_pool, pooling_models.eval_pool\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
