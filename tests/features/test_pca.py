import io
import pickle
import warnings

import numpy as np
import pytest

from features.formats import YT8M_PCA_EPSILON
from features.pca import (
    FrameReservoir,
    PcaRankWarning,
    PcaTransform,
    fit_pca,
    load_pca,
    load_yt8m_pca_dir,
)

TRUE_EIGENVALUES = np.array([9.0, 4.0, 2.0, 1.0, 0.25, 0.1])


def _gaussian_sample(num_samples: int, draw_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 6] float32 draws with a fixed non-diagonal covariance, and its eigenvectors [6, 6]."""
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))  # columns
    covariance = rotation @ np.diag(TRUE_EIGENVALUES) @ rotation.T
    mean = np.arange(6, dtype=np.float64)
    rng = np.random.default_rng(draw_seed)
    draws = rng.multivariate_normal(mean, covariance, size=num_samples)
    return draws.astype(np.float32), rotation


def _decile_chi_square(indices: np.ndarray, stream_length: int) -> float:
    counts = np.bincount(indices * 10 // stream_length, minlength=10)
    expected = len(indices) / 10
    return float(((counts - expected) ** 2 / expected).sum())


CHI_SQUARE_9_DOF_999 = 27.88  # 99.9th percentile of chi-square with 9 degrees of freedom


@pytest.fixture(scope="module")
def fitted() -> tuple[PcaTransform, np.ndarray, np.ndarray]:
    features, rotation = _gaussian_sample(20_000, draw_seed=1)
    return fit_pca(features, dims=4), features, rotation


def test_whitening_gives_zero_mean_identity_covariance(fitted):
    transform, features, _ = fitted
    whitened = transform.apply(features)
    assert whitened.shape == (20_000, 4) and whitened.dtype == np.float32
    # On its own sample the output covariance is lambda / (lambda + eps), eps = 1e-4 * 9.
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(4), atol=2e-3)
    # Fresh draws from the same law: identity up to sampling error (about 1%).
    fresh, _ = _gaussian_sample(20_000, draw_seed=2)
    fresh_whitened = transform.apply(fresh)
    np.testing.assert_allclose(fresh_whitened.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(np.cov(fresh_whitened, rowvar=False), np.eye(4), atol=0.05)


def test_eigen_decomposition_matches_the_true_covariance(fitted):
    transform, _, rotation = fitted
    assert (transform.input_dims, transform.output_dims) == (6, 4)
    np.testing.assert_allclose(transform.eigenvalues, TRUE_EIGENVALUES[:4], rtol=0.05)
    np.testing.assert_allclose(transform.mean, np.arange(6), atol=0.05)
    alignment = np.abs(transform.components.T @ rotation[:, :4])  # [4, 4]
    np.testing.assert_allclose(alignment, np.eye(4), atol=0.05)
    assert transform.epsilon == pytest.approx(1e-4 * transform.eigenvalues[0], rel=1e-6)


def test_epsilon_is_relative_so_scale_does_not_matter(fitted):
    transform, features, _ = fitted
    scaled = fit_pca(features * np.float32(1000.0), dims=4)
    assert scaled.epsilon == pytest.approx(transform.epsilon * 1e6, rel=1e-4)
    np.testing.assert_allclose(
        scaled.apply(features[:100] * 1000.0), transform.apply(features[:100]), atol=1e-3
    )


def test_fits_are_deterministic_with_fixed_signs(fitted):
    transform, features, _ = fitted
    again = fit_pca(features.copy(), dims=4)
    np.testing.assert_array_equal(again.components, transform.components)
    largest = transform.components[np.abs(transform.components).argmax(axis=0), range(4)]
    assert (largest > 0).all()


def test_dims_beyond_feature_dims_names_both():
    with pytest.raises(ValueError, match=r"dims=7.*6"):
        fit_pca(np.zeros((10, 6), dtype=np.float32), dims=7)


@pytest.mark.parametrize(
    ("case", "expected_zero"),
    [("few_samples", 3), ("collinear", 2), ("identical_rows", 5)],
)
def test_rank_deficient_fit_is_finite_and_warns(case, expected_zero):
    rng = np.random.default_rng(1)
    if case == "few_samples":
        features = rng.normal(size=(3, 8))  # 3 samples span 2 centred dims
    elif case == "collinear":
        base = rng.normal(size=(50, 3))
        constant = np.full((50, 1), 7.0)
        features = np.hstack([base, 2 * base[:, :1], base[:, 1:2] - base[:, 2:3], constant])
    else:
        features = np.tile(rng.normal(size=(1, 8)), (20, 1))
    with pytest.warns(PcaRankWarning, match=f"{expected_zero} of 5"):
        transform = fit_pca(features.astype(np.float32), dims=5)
    assert transform.epsilon > 0
    assert np.isfinite(transform.apply(features)).all()
    assert np.isfinite(transform.apply(rng.normal(size=(10, features.shape[1])))).all()


def test_full_rank_fit_does_not_warn(fitted):
    _, features, _ = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error", PcaRankWarning)
        fit_pca(features[:500], dims=6)


def _assert_same(loaded: PcaTransform, original: PcaTransform) -> None:
    for field in ("mean", "components", "eigenvalues"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(original, field))
        assert getattr(loaded, field).dtype == np.float32
    assert loaded.epsilon == original.epsilon


def test_save_load_round_trip_path_and_file(fitted, tmp_path):
    transform, _, _ = fitted
    path = tmp_path / "pca_without_suffix"
    transform.save(str(path))
    assert path.exists()  # no ".npz" appended to the caller's path
    _assert_same(PcaTransform.load_npz(path), transform)
    _assert_same(load_pca(path), transform)
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(["mean", "components", "eigenvalues", "epsilon"])

    buffer = io.BytesIO()
    transform.save(buffer)
    buffer.seek(0)
    _assert_same(PcaTransform.load_npz(buffer), transform)


def test_load_npz_missing_key_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, mean=np.zeros(3), components=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="eigenvalues, epsilon"):
        load_pca(path)


def _write_yt8m_dir(directory, rows_are_vectors: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(8, 1)).astype(np.float32)
    vectors, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    vectors = vectors[:, :4].T.astype(np.float32)  # [4, 8]: one eigenvector per row
    eigenvalues = np.array([[4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
    np.save(directory / "mean.npy", mean)
    np.save(directory / "eigenvecs.npy", vectors if rows_are_vectors else vectors.T)
    np.save(directory / "eigenvals.npy", eigenvalues)
    return {"mean": mean, "eigenvecs": vectors, "eigenvals": eigenvalues}


@pytest.mark.parametrize("rows_are_vectors", [True, False])
def test_yt8m_directory_matches_the_official_formula(tmp_path, rows_are_vectors):
    arrays = _write_yt8m_dir(tmp_path, rows_are_vectors)
    transform = load_yt8m_pca_dir(tmp_path)
    assert (transform.input_dims, transform.output_dims) == (8, 4)
    assert transform.epsilon == YT8M_PCA_EPSILON
    frames = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    # YouTube-8M's extractor: (x - mean) . eigenvecs.T / sqrt(eigenvals + 1e-4).
    expected = (frames - arrays["mean"][:, 0]) @ arrays["eigenvecs"].T
    expected /= np.sqrt(arrays["eigenvals"][:, 0] + 1e-4)
    np.testing.assert_allclose(transform.apply(frames), expected, rtol=1e-5, atol=1e-6)
    _assert_same(load_pca(tmp_path), transform)

    transform.save(tmp_path / "pca.npz")
    _assert_same(load_pca(tmp_path / "pca.npz"), transform)


def test_yt8m_directory_missing_file_is_named(tmp_path):
    _write_yt8m_dir(tmp_path)
    (tmp_path / "eigenvals.npy").unlink()
    with pytest.raises(FileNotFoundError, match="eigenvals.npy"):
        load_pca(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pca(tmp_path / "nowhere")


def _stream(length: int, dims: int = 3) -> np.ndarray:
    """[length, dims] float32 rows whose every entry is the row's index."""
    return np.repeat(np.arange(length, dtype=np.float32)[:, None], dims, axis=1)


def _fill(reservoir: FrameReservoir, rows: np.ndarray, batch: int = 300) -> FrameReservoir:
    for start in range(0, len(rows), batch):
        reservoir.add(rows[start : start + batch])
    return reservoir


def test_reservoir_keeps_everything_until_full():
    reservoir = _fill(FrameReservoir(capacity=100), _stream(30), batch=7)
    assert reservoir.seen == 30
    np.testing.assert_array_equal(reservoir.sample(), _stream(30))
    assert FrameReservoir(capacity=5).sample().shape == (0, 0)


def test_reservoir_respects_capacity_and_samples_uniformly():
    reservoir = _fill(FrameReservoir(capacity=2000, seed=5), _stream(20_000), batch=37)
    sample = reservoir.sample()
    assert sample.shape == (2000, 3) and sample.dtype == np.float32
    assert reservoir.seen == 20_000
    indices = sample[:, 0].astype(np.int64)
    assert len(np.unique(indices)) == 2000  # rows, never duplicates
    assert _decile_chi_square(indices, 20_000) < CHI_SQUARE_9_DOF_999


def test_merge_weights_by_rows_seen():
    zeros = _fill(FrameReservoir(capacity=1000, seed=1), np.zeros((1000, 2), np.float32))
    ones = _fill(FrameReservoir(capacity=1000, seed=2), np.ones((3000, 2), np.float32))
    merged = zeros.merge(ones)
    assert merged is zeros and merged.seen == 4000
    sample = merged.sample()
    assert sample.shape == (1000, 2)
    assert sample[:, 0].mean() == pytest.approx(0.75, abs=0.04)  # 1 sd is about 0.012
    assert ones.seen == 3000 and ones.sample().shape == (1000, 2)  # other left unchanged


def test_merged_shards_sample_the_whole_stream_uniformly():
    rows = _stream(20_000)
    shards = [_fill(FrameReservoir(1500, seed=s), rows[s::4]) for s in range(4)]
    merged = FrameReservoir(1500, seed=9)
    for shard in shards:
        merged.merge(shard)
    merged.add(_stream(25_000)[20_000:])  # keeps streaming after a merge
    indices = merged.sample()[:, 0].astype(np.int64)
    assert merged.seen == 25_000 and len(np.unique(indices)) == 1500
    assert _decile_chi_square(indices, 25_000) < CHI_SQUARE_9_DOF_999


def test_merge_edge_cases():
    small = _fill(FrameReservoir(10, seed=1), _stream(4))
    merged = FrameReservoir(10, seed=2).merge(small).merge(FrameReservoir(10))
    np.testing.assert_array_equal(np.sort(merged.sample()[:, 0]), np.arange(4))
    with pytest.raises(ValueError, match="capacities differ"):
        merged.merge(_fill(FrameReservoir(11), _stream(2)))
    with pytest.raises(ValueError, match="dims"):
        merged.add(np.zeros((2, 4), np.float32))


def test_reservoir_is_deterministic_and_pickles():
    def run(seed: int) -> FrameReservoir:
        first = _fill(FrameReservoir(200, seed=seed), _stream(3000), batch=101)
        return first.merge(_fill(FrameReservoir(200, seed=seed + 1), _stream(1000)))

    np.testing.assert_array_equal(run(0).sample(), run(0).sample())
    assert not np.array_equal(run(0).sample(), run(7).sample())

    original = _fill(FrameReservoir(500, seed=3), _stream(100))
    restored = pickle.loads(pickle.dumps(original))
    for reservoir in (original, restored):
        _fill(reservoir, _stream(2000)[100:])
    np.testing.assert_array_equal(restored.sample(), original.sample())
    assert restored.seen == original.seen == 2000
