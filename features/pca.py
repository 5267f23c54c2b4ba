"""PCA whitening as YouTube-8M: fit, apply, save/load, and a mergeable frame reservoir.

A transform maps backbone features x [D] to (x - mean) . V / sqrt(lambda + epsilon) [K]:
V holds the top K eigenvectors of the feature covariance as columns, lambda their eigenvalues.
"""

import os
import warnings
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from features.formats import MAX_PCA_DIMS, RELATIVE_PCA_EPSILON, YT8M_PCA_EPSILON

PathOrFile = str | os.PathLike[str] | IO[bytes]

_NPZ_KEYS = ("mean", "components", "eigenvalues", "epsilon")
_YT8M_FILES = ("mean", "eigenvecs", "eigenvals")
# Covariance is accumulated over row chunks so a 50 000 x 2048 sample never exists in float64.
_COVARIANCE_CHUNK_ROWS = 4096


class PcaRankWarning(UserWarning):
    """Some kept PCA components have (near-)zero variance: too few or degenerate samples."""


@dataclass(frozen=True, eq=False)
class PcaTransform:
    """A fitted whitening PCA. Arrays are stored as float32."""

    mean: np.ndarray  # [D] float32
    components: np.ndarray  # [D, K] float32, columns = eigenvectors, descending eigenvalue
    eigenvalues: np.ndarray  # [K] float32, descending
    epsilon: float  # added to each eigenvalue before the square root

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        components = np.asarray(self.components, dtype=np.float32)
        eigenvalues = np.asarray(self.eigenvalues, dtype=np.float32).reshape(-1)
        if components.ndim != 2 or components.shape != (mean.size, eigenvalues.size):
            raise ValueError(
                f"PcaTransform: components has shape {components.shape}, expected "
                f"[D={mean.size}, K={eigenvalues.size}] from mean and eigenvalues"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", components)
        object.__setattr__(self, "eigenvalues", eigenvalues)
        object.__setattr__(self, "epsilon", float(self.epsilon))

    @property
    def input_dims(self) -> int:
        return self.mean.size

    @property
    def output_dims(self) -> int:
        return self.eigenvalues.size

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Whitens [..., D] features into [..., K] float32."""
        values = np.asarray(features, dtype=np.float32)
        if values.shape[-1:] != (self.input_dims,):
            raise ValueError(
                f"PcaTransform.apply: features have shape {values.shape}, "
                f"expected last dimension {self.input_dims}"
            )
        scale = 1.0 / np.sqrt(self.eigenvalues + np.float32(self.epsilon))  # [K] float32
        return ((values - self.mean) @ self.components) * scale  # [..., K] float32

    def save(self, path_or_file: PathOrFile) -> None:
        """Writes an .npz with keys mean, components, eigenvalues, epsilon."""
        arrays = {
            "mean": self.mean,
            "components": self.components,
            "eigenvalues": self.eigenvalues,
            "epsilon": np.float64(self.epsilon),
        }
        if isinstance(path_or_file, str | os.PathLike):
            # An open file keeps np.savez from appending ".npz" to the caller's exact path.
            with open(path_or_file, "wb") as file:
                np.savez(file, **arrays)
        else:
            np.savez(path_or_file, **arrays)

    @classmethod
    def load_npz(cls, path_or_file: PathOrFile) -> "PcaTransform":
        """Reads what `save` wrote."""
        name = _describe(path_or_file)
        with np.load(path_or_file, allow_pickle=False) as npz:
            missing = [key for key in _NPZ_KEYS if key not in npz.files]
            if missing:
                raise ValueError(f"{name}: PCA file lacks key(s) {', '.join(missing)}")
            return cls(
                mean=npz["mean"],
                components=npz["components"],
                eigenvalues=npz["eigenvalues"],
                epsilon=float(npz["epsilon"]),
            )


def fit_pca(
    features: np.ndarray, dims: int, relative_epsilon: float = RELATIVE_PCA_EPSILON
) -> PcaTransform:
    """Fits a whitening PCA on [N, D] features, keeping the top `dims` components.

    The covariance is eigen-decomposed in float64. Epsilon is relative_epsilon times the
    largest eigenvalue, so whitening behaves alike for backbones whose feature scales differ
    by orders of magnitude (relative_epsilon itself when all variance is zero). Each
    eigenvector's largest-magnitude entry is made positive, so equal data gives equal fits.

    Warns PcaRankWarning when kept components have (near-)zero variance; their whitened
    outputs stay finite (about 0 on data like the sample).
    """
    values = np.asarray(features)
    if values.ndim != 2:
        raise ValueError(f"fit_pca: features must be [N, D], got shape {values.shape}")
    num_samples, input_dims = values.shape
    if dims > input_dims:
        raise ValueError(f"fit_pca: dims={dims} exceeds the {input_dims} feature dims")
    if dims < 1:
        raise ValueError(f"fit_pca: dims={dims} must be >= 1")
    if num_samples == 0:
        raise ValueError("fit_pca: no samples")
    if not relative_epsilon > 0:
        raise ValueError(f"fit_pca: relative_epsilon={relative_epsilon} must be > 0")

    mean, covariance = _mean_and_covariance(values)  # [D], [D, D] float64
    all_eigenvalues, all_vectors = np.linalg.eigh(covariance)  # ascending
    eigenvalues = np.clip(all_eigenvalues[::-1][:dims], 0.0, None)  # [K] descending
    vectors = all_vectors[:, ::-1][:, :dims]  # [D, K]
    vectors = vectors * _sign_flips(vectors)

    largest = float(max(all_eigenvalues[-1], 0.0))
    # Eigenvalues below eigh's round-off level are zero variance in disguise.
    tolerance = largest * input_dims * np.finfo(np.float64).eps
    zero_count = int((eigenvalues <= tolerance).sum())
    if zero_count:
        warnings.warn(
            f"fit_pca: {zero_count} of {dims} kept components have (near-)zero variance "
            f"({num_samples} samples of {input_dims} dims); their whitened outputs are "
            "about 0 on data like the sample. Fit on more, and more varied, frames.",
            PcaRankWarning,
            stacklevel=2,
        )
    epsilon = relative_epsilon * largest if largest > 0 else relative_epsilon
    return PcaTransform(mean=mean, components=vectors, eigenvalues=eigenvalues, epsilon=epsilon)


def load_yt8m_pca_dir(directory: str | os.PathLike[str]) -> PcaTransform:
    """Reads YouTube-8M's published PCA: mean.npy, eigenvecs.npy, eigenvals.npy.

    As the YouTube-8M feature extractor reads them: mean [D] (or [D, 1]); eigenvecs
    [K', D] with one eigenvector per row; eigenvals [K', 1]; the first
    min(K', MAX_PCA_DIMS) are kept. An eigenvecs array already laid out as [D, K]
    (eigenvectors as columns) is accepted too. Epsilon is YT8M_PCA_EPSILON.
    """
    paths = {name: os.path.join(directory, f"{name}.npy") for name in _YT8M_FILES}
    for path in paths.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing YouTube-8M PCA file")
    mean = np.load(paths["mean"], allow_pickle=False).reshape(-1)  # [D]
    vectors = np.load(paths["eigenvecs"], allow_pickle=False)
    eigenvalues = np.load(paths["eigenvals"], allow_pickle=False).reshape(-1)  # [K']
    if vectors.ndim == 2 and vectors.shape[1] == mean.size:
        components = vectors.T  # rows are eigenvectors, as in the published file
    elif vectors.ndim == 2 and vectors.shape[0] == mean.size:
        components = vectors
    else:
        raise ValueError(
            f"{paths['eigenvecs']}: shape {vectors.shape} does not match mean dims {mean.size}"
        )
    kept = min(components.shape[1], eigenvalues.size, MAX_PCA_DIMS)
    return PcaTransform(
        mean=mean,
        components=components[:, :kept],
        eigenvalues=eigenvalues[:kept],
        epsilon=YT8M_PCA_EPSILON,
    )


def load_pca(path: str | os.PathLike[str]) -> PcaTransform:
    """Loads an .npz written by PcaTransform.save, or a YouTube-8M PCA directory."""
    if os.path.isdir(path):
        return load_yt8m_pca_dir(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no PCA .npz file or directory")
    return PcaTransform.load_npz(path)


class FrameReservoir:
    """A uniform random sample of at most `capacity` frame vectors from a stream.

    `add` is Algorithm R; `merge` draws how many rows each side contributes from the
    hypergeometric law of their seen counts, so merged samples stay uniform over
    everything both reservoirs saw. Results are deterministic given seeds and call order.
    Reservoirs that will be merged should have distinct seeds: equal seeds make their
    row choices correlated (each sample is still uniform on its own).
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"FrameReservoir: capacity={capacity} must be >= 1")
        self.capacity = capacity
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._rows = np.empty((0, 0), dtype=np.float32)  # [allocated, D]; grows to capacity
        self._size = 0  # rows of _rows in use

    def add(self, batch: np.ndarray) -> None:
        """Offers [n, D] frame vectors to the sample."""
        rows = np.asarray(batch, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"FrameReservoir.add: batch must be [n, D], got shape {rows.shape}")
        self._check_dims(rows.shape[1])
        filling = min(self.capacity - self._size, len(rows))
        if filling:
            self._append(rows[:filling])
        rest = rows[filling:]
        if len(rest):
            # Row i of the stream (0-based) replaces a uniform slot of i+1 if that is in range.
            positions = self.seen + filling + np.arange(len(rest)) + 1
            slots = self._rng.integers(0, positions)
            accepted = np.flatnonzero(slots < self.capacity)
            # When several rows hit one slot the latest wins, as in the sequential algorithm.
            slots_last_first = slots[accepted][::-1]
            unique_slots, first = np.unique(slots_last_first, return_index=True)
            self._rows[unique_slots] = rest[accepted[::-1][first]]
        self.seen += len(rows)

    def merge(self, other: "FrameReservoir") -> "FrameReservoir":
        """Folds `other` (left unchanged) into this reservoir and returns self."""
        if other.capacity != self.capacity:
            raise ValueError(
                f"FrameReservoir.merge: capacities differ ({self.capacity} vs {other.capacity})"
            )
        if other.seen == 0:
            return self
        self._check_dims(other._rows.shape[1])
        total = self.seen + other.seen
        size = min(self.capacity, total)
        from_self = int(self._rng.hypergeometric(self.seen, other.seen, size))
        keep = self._rng.choice(self._size, size=from_self, replace=False)
        take = self._rng.choice(other._size, size=size - from_self, replace=False)
        kept_rows = self._rows[np.sort(keep)]
        self._size = 0
        self._append(kept_rows)
        self._append(other._rows[np.sort(take)])
        self.seen = total
        return self

    def sample(self) -> np.ndarray:
        """A copy of the sample: [min(capacity, seen), D] float32 ([0, 0] before any add)."""
        return self._rows[: self._size].copy()

    def _check_dims(self, dims: int) -> None:
        if self._rows.shape[1] == 0 and self._size == 0:
            self._rows = np.empty((0, dims), dtype=np.float32)
        elif dims != self._rows.shape[1]:
            raise ValueError(
                f"FrameReservoir: rows have {dims} dims, the sample has {self._rows.shape[1]}"
            )

    def _append(self, rows: np.ndarray) -> None:
        needed = self._size + len(rows)
        if needed > len(self._rows):
            # Geometric growth: filling by 300-frame videos must not copy the sample each time.
            allocated = min(self.capacity, max(needed, 2 * len(self._rows)))
            grown = np.empty((allocated, rows.shape[1]), dtype=np.float32)
            grown[: self._size] = self._rows[: self._size]
            self._rows = grown
        self._rows[self._size : needed] = rows
        self._size = needed

    def __getstate__(self) -> dict[str, Any]:
        # Unused preallocated rows are not worth pickling between Beam workers.
        state = self.__dict__.copy()
        state["_rows"] = self._rows[: self._size].copy()
        return state


def _mean_and_covariance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] -> mean [D] and sample covariance [D, D], both float64, chunk by chunk."""
    num_samples, input_dims = values.shape
    mean = np.zeros(input_dims)
    for start in range(0, num_samples, _COVARIANCE_CHUNK_ROWS):
        mean += values[start : start + _COVARIANCE_CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean /= num_samples
    if not np.isfinite(mean).all():
        raise ValueError("fit_pca: features contain NaN or infinite values")
    scatter = np.zeros((input_dims, input_dims))
    for start in range(0, num_samples, _COVARIANCE_CHUNK_ROWS):
        centred = values[start : start + _COVARIANCE_CHUNK_ROWS].astype(np.float64) - mean
        scatter += centred.T @ centred
    return mean, scatter / max(num_samples - 1, 1)


def _sign_flips(vectors: np.ndarray) -> np.ndarray:
    """[D, K] -> [K] of +-1 making each column's largest-magnitude entry positive."""
    largest = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
    return np.where(largest < 0, -1.0, 1.0)


def _describe(path_or_file: PathOrFile) -> str:
    if isinstance(path_or_file, str | os.PathLike):
        return os.fspath(path_or_file)
    return str(getattr(path_or_file, "name", "<PCA file object>"))
