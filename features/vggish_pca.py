"""VGGish's published PCA (vggish_pca_params.npz) as one of our whitening PcaTransforms.

The published postprocessor (vggish_postprocess.py) computes y = E (x - m) with E =
`pca_eigen_vectors` [128 out, 128 in] and m = `pca_means` [128], then clips y to [-2, 2] and
quantizes it to 8 bits. E already folds in the whitening: its rows are eigenvectors scaled by
1 / sqrt(variance). Our PcaTransform computes ((x - mean) . V) / sqrt(lambda + epsilon), so
row k of E splits into its direction V[:, k] = E[k] / |E[k]| and lambda_k = 1 / |E[k]|^2,
with epsilon 0: the same y, and V and lambda keep their meaning (unit eigenvectors and the
variances along them). Output order is the file's row order, never re-sorted, so dims line
up with AudioSet's released embeddings.

Clipping and 8-bit quantization then are features.quantize's, which rounds to the nearest
level where VGGish's postprocessor truncates: our bytes equal VGGish's or sit one level
above (never below), within the half level that YouTube-8M's dequantize adds back anyway.
"""

from __future__ import annotations

import os

import numpy as np

from features.pca import PcaTransform

EIGEN_VECTORS_KEY = "pca_eigen_vectors"
MEANS_KEY = "pca_means"
VGGISH_PCA_KEYS = (EIGEN_VECTORS_KEY, MEANS_KEY)


def is_vggish_pca_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an .npz holding VGGish's PCA keys (rather than PcaTransform.save's)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return all(key in npz.files for key in VGGISH_PCA_KEYS)
    except (OSError, ValueError):
        return False


def vggish_pca_transform(eigen_vectors: np.ndarray, means: np.ndarray) -> PcaTransform:
    """The PcaTransform computing eigen_vectors @ (x - means): [K, D] and [D] (or [D, 1])."""
    matrix = np.asarray(eigen_vectors, dtype=np.float64)
    mean = np.asarray(means, dtype=np.float64).reshape(-1)  # [D]
    if matrix.ndim != 2 or matrix.shape[1] != mean.size:
        raise ValueError(
            f"VGGish PCA: {EIGEN_VECTORS_KEY} has shape {matrix.shape}, expected "
            f"[K, D={mean.size}] (rows = whitened eigenvectors) for {MEANS_KEY} of {mean.size}"
        )
    norms = np.linalg.norm(matrix, axis=1)  # [K]
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError(f"VGGish PCA: {EIGEN_VECTORS_KEY} has zero or non-finite rows")
    return PcaTransform(
        mean=mean,
        components=(matrix / norms[:, None]).T,  # [D, K] unit columns
        eigenvalues=1.0 / norms**2,  # [K]
        epsilon=0.0,
    )


def load_vggish_pca(path: str | os.PathLike[str]) -> PcaTransform:
    """Reads vggish_pca_params.npz (keys pca_eigen_vectors, pca_means) as a PcaTransform."""
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no VGGish PCA file")
    with np.load(path, allow_pickle=False) as npz:
        missing = [key for key in VGGISH_PCA_KEYS if key not in npz.files]
        if missing:
            raise ValueError(f"{name}: VGGish PCA file lacks key(s) {', '.join(missing)}")
        try:
            return vggish_pca_transform(npz[EIGEN_VECTORS_KEY], npz[MEANS_KEY])
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
