import keras
import numpy as np
import pytest

from pooling_models.layers import (
    POOLING_LAYERS,
    ContextGating,
    ConvPooling,
    FrameMask,
    MaskedBatchNormalization,
    NetVLAD,
    NeXtVLAD,
    NonLocalBlock,
    NonLocalPooling,
    masked_max,
    masked_mean,
)

BATCH, STEPS, FEATURES = 3, 5, 8
LENGTHS = np.array([2, 5, 3], dtype=np.int32)  # real frames per video; every video has >= 1
EXTRA_PADDING = 2

# (registry name, tiny constructor args, expected output width P for FEATURES-dim frames)
CASES = [
    ("mean", {}, FEATURES),
    ("max", {}, FEATURES),
    ("conv", {"hidden_size": 6}, 6),
    ("conv", {"hidden_size": 6, "variant": "tconv"}, 6),
    ("netvlad", {"cluster_size": 4}, 4 * FEATURES),
    ("netrvlad", {"cluster_size": 4}, 4 * FEATURES),
    ("netfv", {"cluster_size": 3}, 2 * 3 * FEATURES),
    ("softdbow", {"cluster_size": 4}, 4),
    ("dbof", {"cluster_size": 6, "hidden_size": 5}, 5),
    ("dbof", {"cluster_size": 6, "pooling": "mean", "activation": "relu"}, 6),
    ("nextvlad", {"cluster_size": 3, "expansion": 2, "groups": 4}, 3 * 2 * FEATURES // 4),
    ("lstm", {"units": 4, "num_layers": 2}, 4),
    ("gru", {"units": 4, "num_layers": 2}, 4),
    # A random output projection, so the suite sees attention at work (the default, zeros,
    # makes a new block the identity).
    ("nonlocal", {"cluster_size": 3, "output_initializer": "glorot_uniform"}, 3 * FEATURES),
    ("nonlocal", {"pooling": "mean", "bottleneck_size": 3, "output_initializer": "ones"}, FEATURES),
]
PARAMS = [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(CASES)]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    return np.arange(steps)[None, :] < lengths[:, None]  # [B, T] bool


def _garbage_padded(frames: np.ndarray, lengths: np.ndarray, steps: int, seed: int):
    """Real frames of `frames`, padded to `steps` with large random junk; -> (frames, mask)."""
    rng = np.random.default_rng(seed)
    padded = rng.normal(scale=100.0, size=(len(lengths), steps, frames.shape[-1]))
    mask = _mask(lengths, steps)
    padded[mask] = frames[_mask(lengths, frames.shape[1])]
    return padded.astype(np.float32), mask


def _frames(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)


def test_cases_cover_every_registered_pooling():
    assert {name for name, _, _ in CASES} == set(POOLING_LAYERS)


@pytest.mark.parametrize("name, kwargs, width", PARAMS)
def test_output_shape_and_finite(name, kwargs, width):
    layer = POOLING_LAYERS[name](**kwargs)
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    for training in (True, False):
        pooled = keras.ops.convert_to_numpy(layer(frames, mask=mask, training=training))
        assert pooled.shape == (BATCH, width)
        assert np.isfinite(pooled).all()
    assert layer.compute_output_shape((None, None, FEATURES)) == (None, width)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name, kwargs, width", PARAMS)
def test_padding_never_changes_output(name, kwargs, width, training):
    layer = POOLING_LAYERS[name](**kwargs)
    frames = _frames()
    short, short_mask = _garbage_padded(frames, LENGTHS, STEPS, seed=2)
    long, long_mask = _garbage_padded(frames, LENGTHS, STEPS + EXTRA_PADDING, seed=3)
    # Same weights and, for batch norm in training, the same batch of real frames.
    expected = layer(short, mask=short_mask, training=training)
    pooled = layer(long, mask=long_mask, training=training)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)


@pytest.mark.parametrize("name, kwargs, width", PARAMS)
def test_video_pooled_alone_matches_padded_batch(name, kwargs, width):
    layer = POOLING_LAYERS[name](**kwargs)
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    batched = keras.ops.convert_to_numpy(layer(frames, mask=mask, training=False))
    for video, length in enumerate(LENGTHS):
        alone = layer(frames[video : video + 1, :length], training=False)
        np.testing.assert_allclose(alone[0], batched[video], atol=1e-5)


@pytest.mark.parametrize("name, kwargs, width", PARAMS)
def test_config_round_trip(name, kwargs, width):
    layer = POOLING_LAYERS[name](**kwargs)
    rebuilt = layer.__class__.from_config(layer.get_config())
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == layer.get_config()


@pytest.mark.parametrize("name, kwargs, width", PARAMS)
def test_keras_file_round_trip(name, kwargs, width, tmp_path):
    frames_in = keras.Input(shape=(None, FEATURES), name="frames")
    num_frames_in = keras.Input(shape=(), dtype="int32", name="num_frames")
    mask = FrameMask()(frames_in, num_frames_in)
    pooled = POOLING_LAYERS[name](**kwargs)(frames_in, mask=mask)
    model = keras.Model([frames_in, num_frames_in], pooled)
    frames, _ = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    model([frames, LENGTHS], training=True)  # moves batch-norm statistics off their init
    expected = model([frames, LENGTHS], training=False)

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded([frames, LENGTHS], training=False), expected, atol=1e-6)


def test_netvlad_matches_numpy_formula():
    batch, steps, features, clusters = 2, 3, 4, 2
    rng = np.random.default_rng(4)
    frames = rng.normal(size=(batch, steps, features)).astype(np.float32)
    lengths = np.array([3, 2])
    mask = _mask(lengths, steps)
    weights = rng.normal(size=(features, clusters)).astype(np.float32)
    centres = rng.normal(size=(clusters, features)).astype(np.float32)
    gamma, beta = np.array([1.5, 0.5]), np.array([0.1, -0.2])
    moving_mean, moving_variance = np.array([0.3, -0.1]), np.array([2.0, 0.5])

    layer = NetVLAD(cluster_size=clusters)
    layer.build((None, None, features))
    layer.assignment.cluster_weights.assign(weights)
    norm = layer.assignment.logits_norm
    for variable, value in [
        (norm.gamma, gamma),
        (norm.beta, beta),
        (norm.moving_mean, moving_mean),
        (norm.moving_variance, moving_variance),
    ]:
        variable.assign(value.astype(np.float32))
    layer.centres.assign(centres)
    pooled = keras.ops.convert_to_numpy(layer(frames, mask=mask, training=False))

    for video in range(batch):
        x = frames[video, : lengths[video]].astype(np.float64)  # real frames only
        logits = (x @ weights - moving_mean) / np.sqrt(moving_variance + 1e-3) * gamma + beta
        soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # [t, K]
        vlad = np.stack(
            [(soft[:, k : k + 1] * (x - centres[k])).sum(axis=0) for k in range(clusters)]
        )  # [K, D]
        vlad /= np.linalg.norm(vlad, axis=1, keepdims=True)
        vlad = vlad.reshape(-1)
        np.testing.assert_allclose(pooled[video], vlad / np.linalg.norm(vlad), atol=1e-5)


def test_masked_batch_norm_uses_real_frames_only():
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    real = frames[mask]  # [n, D]
    layer = MaskedBatchNormalization(momentum=0.9)
    normed = keras.ops.convert_to_numpy(layer(frames, mask=mask, training=True))

    expected = (real - real.mean(axis=0)) / np.sqrt(real.var(axis=0) + 1e-3)
    np.testing.assert_allclose(normed[mask], expected, atol=1e-5)
    assert (normed[~mask] == 0).all()
    np.testing.assert_allclose(layer.moving_mean, 0.1 * real.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, 0.9 + 0.1 * real.var(axis=0), atol=1e-5)

    inferred = keras.ops.convert_to_numpy(layer(frames, mask=mask, training=False))
    moving_mean = keras.ops.convert_to_numpy(layer.moving_mean)
    moving_variance = keras.ops.convert_to_numpy(layer.moving_variance)
    expected = (real - moving_mean) / np.sqrt(moving_variance + 1e-3)
    np.testing.assert_allclose(inferred[mask], expected, atol=1e-5)


def test_masked_mean_and_max_ignore_padding():
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    means = keras.ops.convert_to_numpy(masked_mean(frames, mask))
    maxima = keras.ops.convert_to_numpy(masked_max(frames, mask))
    for video, length in enumerate(LENGTHS):
        np.testing.assert_allclose(means[video], frames[video, :length].mean(axis=0), atol=1e-6)
        np.testing.assert_array_equal(maxima[video], frames[video, :length].max(axis=0))


def test_frame_mask_marks_the_first_num_frames():
    mask = FrameMask()(np.zeros((BATCH, STEPS, FEATURES), np.float32), LENGTHS)
    np.testing.assert_array_equal(mask, _mask(LENGTHS, STEPS))


def test_context_gating_scales_each_entry_by_a_gate():
    inputs = _frames()[:, 0]  # [B, D]
    for use_batch_norm in (True, False):
        layer = ContextGating(use_batch_norm=use_batch_norm)
        gated = keras.ops.convert_to_numpy(layer(inputs, training=True))
        ratio = gated / inputs
        assert gated.shape == inputs.shape
        assert ((ratio > 0) & (ratio < 1)).all()
        rebuilt = ContextGating.from_config(layer.get_config())
        assert rebuilt.get_config() == layer.get_config()


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="variant='spatial'"):
        ConvPooling(variant="spatial")
    with pytest.raises(ValueError, match="groups=3"):
        NeXtVLAD(cluster_size=2, groups=3)(_frames())
    with pytest.raises(ValueError, match="pooling='max'"):
        NonLocalPooling(pooling="max")
    with pytest.raises(ValueError, match="bottleneck_size=-1"):
        NonLocalBlock(bottleneck_size=-1)


def _nonlocal_block(features: int, width: int, seed: int) -> tuple[NonLocalBlock, dict]:
    """A built block with random weights (W_z too), and those weights by name."""
    rng = np.random.default_rng(seed)
    block = NonLocalBlock(bottleneck_size=width)
    block.build((None, None, features))
    weights = {}
    for name, shape in [
        ("theta", (features, width)),
        ("phi", (features, width)),
        ("g", (features, width)),
        ("output_projection", (width, features)),
    ]:
        layer = getattr(block, name)
        weights[name] = (rng.normal(size=shape), rng.normal(size=shape[-1]))
        layer.kernel.assign(weights[name][0].astype(np.float32))
        layer.bias.assign(weights[name][1].astype(np.float32))
    return block, weights


def test_non_local_block_matches_numpy_formula_over_real_frames():
    """z_t = x_t + W_z sum_s softmax_s(theta(x_t).phi(x_s)/sqrt(C)) g(x_s), s real only."""
    block, weights = _nonlocal_block(FEATURES, 3, seed=5)
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS + EXTRA_PADDING, seed=6)
    attended = keras.ops.convert_to_numpy(block(frames, mask=mask))

    def linear(x, name):
        kernel, bias = weights[name]
        return x @ kernel + bias

    for video, length in enumerate(LENGTHS):
        x = frames[video, :length].astype(np.float64)  # [t, D], the real frames
        logits = linear(x, "theta") @ linear(x, "phi").T / np.sqrt(3)
        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        expected = x + linear(soft @ linear(x, "g"), "output_projection")
        np.testing.assert_allclose(attended[video, :length], expected, rtol=1e-4, atol=1e-4)
        assert (attended[video, length:] == 0).all()  # padded rows stay zero


def test_a_new_non_local_block_is_the_identity():
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    attended = keras.ops.convert_to_numpy(NonLocalBlock()(frames, mask=mask))
    np.testing.assert_array_equal(attended[mask], frames[mask])
    pooled = NonLocalPooling(pooling="mean")(frames, mask=mask)
    np.testing.assert_allclose(pooled, masked_mean(frames, mask), atol=1e-6)


def test_non_local_attention_mixes_frames_of_a_video_only():
    """With W_z nonzero, changing one real frame changes every real row of its video (the
    block attends across time) and nothing in the other videos."""
    block, _ = _nonlocal_block(FEATURES, 4, seed=7)
    frames, mask = _garbage_padded(_frames(), LENGTHS, STEPS, seed=2)
    before = keras.ops.convert_to_numpy(block(frames, mask=mask))
    changed = frames.copy()
    changed[1, 0] += 1.0  # video 1's first frame
    after = keras.ops.convert_to_numpy(block(changed, mask=mask))
    assert (np.abs(after[1, 1:] - before[1, 1:]).max(axis=-1) > 1e-4).all()
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
