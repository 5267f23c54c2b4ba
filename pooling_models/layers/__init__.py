"""Pooling layers: frames [B, T, D] + mask [B, T] -> one vector per video [B, P].

`POOLING_LAYERS` maps the names `--pooling` accepts to layer classes; each class's
docstring lists its constructor args and its output width P. `single_frame` is not here:
it is a way of applying the classifier (per frame, then `masked_mean`), not a layer.
"""

from pooling_models.layers.assignment import SoftAssignment
from pooling_models.layers.bow import DBoF, SoftDBoW
from pooling_models.layers.conv import ConvPooling
from pooling_models.layers.fisher import NetFV
from pooling_models.layers.gating import ContextGating
from pooling_models.layers.masking import (
    FrameMask,
    MaskedBatchNormalization,
    MaskedPooling,
    masked_max,
    masked_mean,
    zero_padding,
)
from pooling_models.layers.nextvlad import NeXtVLAD
from pooling_models.layers.non_local import NonLocalBlock, NonLocalPooling
from pooling_models.layers.recurrent import GRUPooling, LSTMPooling
from pooling_models.layers.simple import MaxPooling, MeanPooling
from pooling_models.layers.vlad import NetRVLAD, NetVLAD

POOLING_LAYERS: dict[str, type] = {
    "mean": MeanPooling,
    "max": MaxPooling,
    "conv": ConvPooling,
    "netvlad": NetVLAD,
    "netrvlad": NetRVLAD,
    "netfv": NetFV,
    "softdbow": SoftDBoW,
    "dbof": DBoF,
    "nextvlad": NeXtVLAD,
    "lstm": LSTMPooling,
    "gru": GRUPooling,
    "nonlocal": NonLocalPooling,
}

__all__ = [
    "POOLING_LAYERS",
    "ContextGating",
    "ConvPooling",
    "DBoF",
    "FrameMask",
    "GRUPooling",
    "LSTMPooling",
    "MaskedBatchNormalization",
    "MaskedPooling",
    "MaxPooling",
    "MeanPooling",
    "NeXtVLAD",
    "NetFV",
    "NetRVLAD",
    "NetVLAD",
    "NonLocalBlock",
    "NonLocalPooling",
    "SoftAssignment",
    "SoftDBoW",
    "masked_max",
    "masked_mean",
    "zero_padding",
]
