"""C3D: the paper's layers and shapes, Sports-1M mean preprocessing, fc6 features, weights."""

import keras
import numpy as np
import pytest

from features.backbones import BackboneError, WeightsSource
from features.c3d import ClipPreprocessing, build_c3d, resolve_c3d_weights
from features.embedder import FrameEmbedder
from features.formats import C3D_FEATURE_DIMS
from features.inflate import multiply_adds


@pytest.fixture(scope="module")
def c3d() -> keras.Model:
    return build_c3d("random", seed=0)


def test_layers_follow_the_paper(c3d: keras.Model) -> None:
    assert c3d.input_shape == (None, 16, 112, 112, 3)
    assert c3d.inputs[0].dtype == "uint8"
    assert c3d.output_shape == (None, C3D_FEATURE_DIMS) == (None, 4096)
    convolutions = [x for x in c3d.layers if isinstance(x, keras.layers.Conv3D)]
    assert [x.filters for x in convolutions] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert {tuple(x.kernel.shape[:3]) for x in convolutions} == {(3, 3, 3)}
    pools = [x for x in c3d.layers if isinstance(x, keras.layers.MaxPooling3D)]
    assert [x.pool_size for x in pools] == [(1, 2, 2)] + [(2, 2, 2)] * 4
    assert [x.output.shape[1:4] for x in pools] == [
        (16, 56, 56),
        (8, 28, 28),
        (4, 14, 14),
        (2, 7, 7),
        (1, 4, 4),
    ]
    assert c3d.get_layer("fc6").kernel.shape == (1 * 4 * 4 * 512, 4096)
    # 38.5 G multiply-adds per clip (the paper's ~38.5 GFLOPs counts multiply-adds).
    assert 38e9 < multiply_adds(c3d) < 39e9


def test_preprocessing_is_bgr_minus_sports1m_means() -> None:
    clip = np.zeros((1, 2, 2, 2, 3), np.uint8)
    clip[..., 0], clip[..., 1], clip[..., 2] = 200, 100, 50  # R, G, B
    values = np.asarray(ClipPreprocessing()(clip))
    expected = [50 - 90.25, 100 - 97.66, 200 - 101.41]
    np.testing.assert_allclose(values[0, 0, 0, 0], expected, rtol=1e-5)


def test_fc6_features_of_clips(c3d: keras.Model) -> None:
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8)
    clips[1] = clips[1, :1]  # a still clip
    features = FrameEmbedder(c3d, batch_size=2).embed(clips)
    assert features.shape == (2, 4096) and features.dtype == np.float32
    assert features.min() >= 0  # fc6 after its ReLU
    assert 0.2 < (features > 0).mean() < 0.8
    assert not np.allclose(features[0], features[1], rtol=0.05)


def test_weights_sources(tmp_path) -> None:
    assert resolve_c3d_weights("random", seed=3) == WeightsSource("random", seed=3)
    with pytest.raises(BackboneError, match=r"^--c3d_weights imagenet: C3D has no ImageNet"):
        resolve_c3d_weights("imagenet")
    with pytest.raises(BackboneError, match=r"^--c3d_weights .*nope.weights.h5: no such file"):
        resolve_c3d_weights(str(tmp_path / "nope.weights.h5"))
    legacy = tmp_path / "sports1M_weights_tf.h5"
    legacy.write_bytes(b"")
    with pytest.raises(BackboneError, match="expected a C3D '.weights.h5' file"):
        resolve_c3d_weights(str(legacy))
    garbage = tmp_path / "c3d.weights.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(BackboneError, match=r"^--c3d_weights .*c3d.weights.h5: cannot load"):
        build_c3d(str(garbage))
