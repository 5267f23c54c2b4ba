"""What `build_model` builds, as a typed config: light (no Keras), so entry points and the
model directory can parse and validate it before TensorFlow loads."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features.formats import AUDIO_KEY

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
    "nonlocal",
    SINGLE_FRAME,
)
HEAD_CHOICES: tuple[str, ...] = ("logistic", "moe")
DATA_LEVELS: tuple[str, ...] = ("frame", "video")
CONV_VARIANTS: tuple[str, ...] = ("max", "tconv")
NONLOCAL_POOLS: tuple[str, ...] = ("netvlad", "mean")  # what follows the non-local block
# late: each stream pooled on its own, the pooled vectors concatenated; early: the streams'
# frames (aligned, one row per sample) concatenated per frame before one pooling.
FUSIONS: tuple[str, ...] = ("late", "early")
# Pooled beside other streams, these get half the clusters: WILLOW's audio (128-d beside
# rgb's 1024). Every other stream (rgb, flow, i3d, c3d, fovea) gets --cluster_size.
HALF_CLUSTER_FEATURES: tuple[str, ...] = (AUDIO_KEY,)

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
    feature_names / feature_sizes: the model's inputs and their widths D, in order.
    fusion: "late" pools each feature on its own (`cluster_size_for` each) and concatenates
      the pooled vectors; "early" concatenates the features per frame and pools once with
      `cluster_size`. Ignored at video level and by single_frame (they concatenate anyway).
    gating: None = on for the clustered poolings (`clustered`) at frame level, off otherwise.
    hidden_size: the cluster poolings' projection, DBoF's hidden layer and conv's width.
    nonlocal_pool / nonlocal_bottleneck: for pooling "nonlocal", what pools the attended
      frames (`NONLOCAL_POOLS`) and the block's width (0 = half the frame width).
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
    nonlocal_pool: str = "netvlad"
    nonlocal_bottleneck: int = 0
    fusion: str = "late"  # model directories written before the field existed read as late

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; keep the config hashable and equal to its original.
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "feature_sizes", tuple(int(size) for size in self.feature_sizes))
        _check_choice("pooling", self.pooling, POOLING_CHOICES)
        _check_choice("head", self.head, HEAD_CHOICES)
        _check_choice("data_level", self.data_level, DATA_LEVELS)
        _check_choice("conv_variant", self.conv_variant, CONV_VARIANTS)
        _check_choice("nonlocal_pool", self.nonlocal_pool, NONLOCAL_POOLS)
        _check_choice("fusion", self.fusion, FUSIONS)
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
        if self.nonlocal_bottleneck < 0:
            raise ValueError(
                f"ModelConfig.nonlocal_bottleneck={self.nonlocal_bottleneck}: must be >= 0"
            )

    @property
    def clustered(self) -> bool:
        """Whether the pooling aggregates soft cluster assignments (the `CLUSTER_POOLINGS`,
        and nonlocal followed by NetVLAD): its wide output is projected to hidden_size,
        its frames are batch-normalized and it is gated by default, as in LOUPE/WILLOW."""
        if self.pooling == "nonlocal":
            return self.nonlocal_pool == "netvlad"
        return self.pooling in CLUSTER_POOLINGS

    @property
    def gated(self) -> bool:
        """Whether Context Gating is used, with `gating=None` resolved."""
        if self.gating is not None:
            return self.gating
        return self.data_level == "frame" and self.clustered

    @property
    def early_fusion(self) -> bool:
        """Whether one pooling sees every feature, concatenated per frame."""
        return self.fusion == "early" and len(self.feature_names) > 1

    def cluster_size_for(self, name: str) -> int:
        """Clusters of the feature `name` pooled on its own: half for audio beside other
        features (as WILLOW), `cluster_size` otherwise."""
        if name in HALF_CLUSTER_FEATURES and len(self.feature_names) > 1:
            return max(1, self.cluster_size // 2)
        return self.cluster_size

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
