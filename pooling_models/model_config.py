"""What `build_model` builds, as a typed config: light (no Keras), so entry points and the
model directory can parse and validate it before TensorFlow loads."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NUM_FRAMES_KEY = "num_frames"  # the frame-level models' input of real frames per video
SINGLE_FRAME = "single_frame"
# The `--pooling` names: pooling_models.layers.POOLING_LAYERS plus single_frame (a test
# checks that the two agree).
POOLING_CHOICES: tuple[str, ...] = (
    "mean",
    "max",
    "conv",
    "netvlad",
    "netrvlad",
    "netfv",
    "softdbow",
    "dbof",
    "nextvlad",
    "lstm",
    "gru",
    SINGLE_FRAME,
)
HEAD_CHOICES: tuple[str, ...] = ("logistic", "moe")
DATA_LEVELS: tuple[str, ...] = ("frame", "video")
CONV_VARIANTS: tuple[str, ...] = ("max", "tconv")

# Poolings that aggregate soft cluster assignments: LOUPE/WILLOW project their (wide)
# output to hidden_size and gate it, so gating is their default.
CLUSTER_POOLINGS: tuple[str, ...] = ("netvlad", "netrvlad", "netfv", "nextvlad", "softdbow")
_RESERVED_NAMES = (NUM_FRAMES_KEY, "id")
_POSITIVE_FIELDS = (
    "num_classes",
    "cluster_size",
    "hidden_size",
    "num_mixtures",
    "recurrent_layers",
    "recurrent_units",
)


@dataclass(frozen=True)
class ModelConfig:
    """What `build_model` builds; JSON-able with `to_dict` / `from_dict`.

    pooling: a `POOLING_CHOICES` name (ignored when data_level is "video").
    feature_names / feature_sizes: the model's inputs and their widths D, in order; the
      first one sets the cluster count, later ones (audio) get half of it.
    gating: None = on for the `CLUSTER_POOLINGS` at frame level, off otherwise.
    hidden_size: the cluster poolings' projection, DBoF's hidden layer and conv's width.
    l2_penalty: L2 weight of the head's kernels.
    """

    pooling: str = "netvlad"
    num_classes: int = 3862
    feature_names: tuple[str, ...] = ("rgb",)
    feature_sizes: tuple[int, ...] = (1024,)
    data_level: str = "frame"
    cluster_size: int = 64
    hidden_size: int = 1024
    gating: bool | None = None
    head: str = "moe"
    num_mixtures: int = 2
    conv_variant: str = "max"
    recurrent_layers: int = 2
    recurrent_units: int = 1024
    l2_penalty: float = 1e-6

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; keep the config hashable and equal to its original.
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "feature_sizes", tuple(int(size) for size in self.feature_sizes))
        _check_choice("pooling", self.pooling, POOLING_CHOICES)
        _check_choice("head", self.head, HEAD_CHOICES)
        _check_choice("data_level", self.data_level, DATA_LEVELS)
        _check_choice("conv_variant", self.conv_variant, CONV_VARIANTS)
        if not self.feature_names or len(self.feature_names) != len(self.feature_sizes):
            raise ValueError(
                f"ModelConfig.feature_names={self.feature_names} and feature_sizes="
                f"{self.feature_sizes}: need one size per name, and at least one"
            )
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError(f"ModelConfig.feature_names={self.feature_names}: repeated name")
        for name in self.feature_names:
            if name in _RESERVED_NAMES:
                raise ValueError(f"ModelConfig.feature_names: {name!r} is not a feature")
        for field in _POSITIVE_FIELDS:
            _check_positive(field, getattr(self, field))
        for size in self.feature_sizes:
            _check_positive("feature_sizes", size)
        if self.l2_penalty < 0:
            raise ValueError(f"ModelConfig.l2_penalty={self.l2_penalty}: must be >= 0")

    @property
    def gated(self) -> bool:
        """Whether Context Gating is used, with `gating=None` resolved."""
        if self.gating is not None:
            return self.gating
        return self.data_level == "frame" and self.pooling in CLUSTER_POOLINGS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for json.dump (tuples become lists there; from_dict restores them)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of to_dict; missing fields take their defaults, unknown ones are errors."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"ModelConfig: unknown fields {unknown}; expected some of {sorted(known)}"
            )
        return cls(**values)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"ModelConfig.{field}={value!r}: expected one of {choices}")


def _check_positive(field: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"ModelConfig.{field}={value}: must be at least 1")
