"""A stream's weights, checked and hashed before any work: the one place that knows which
network family (VGGish, a frame backbone, its flow/inflated variants, C3D) resolves them.

extract_features records the result in the manifest; tag_videos checks a model's streams
with it before decoding anything.
"""

import dataclasses

from features import storage
from features.backbones import WeightsSource
from features.formats import VGGISH_BACKBONE
from features.streams import FeatureSpec


def resolve_spec_weights(spec: FeatureSpec, load: bool = False) -> WeightsSource:
    """Checks and hashes `spec`'s weights (a gs:// file is staged once) and records the URL
    as given. With `load`, a weights file is also loaded into its network once, so one that
    is not HDF5 or belongs to another network fails here, in one line, not on every worker."""
    local = storage.stage_file(spec.weights)
    if spec.backbone == VGGISH_BACKBONE:
        from features import vggish

        weights = vggish.resolve_vggish_weights(local, spec.seed)
        if load and weights.kind == "path":
            vggish.build_vggish(local, seed=spec.seed)
    else:
        from features import stream_models

        weights = stream_models.resolve_stream_weights(spec.name, spec.backbone, local, spec.seed)
        if load and weights.kind == "path":
            stream_models.build_stream_model(spec.name, spec.backbone, local, spec.seed)
    if storage.is_remote(spec.weights):
        weights = dataclasses.replace(weights, path=spec.weights)
    return weights
