"""8-bit quantization of whitened features, bit-compatible with YouTube-8M.

The published dataset stores each whitened frame vector as D bytes: values clipped to
[QUANTIZE_MIN, QUANTIZE_MAX] and mapped linearly onto QUANTIZE_LEVELS levels.
"""

import numpy as np

from features.formats import QUANTIZE_LEVELS, QUANTIZE_MAX, QUANTIZE_MIN

_RANGE = QUANTIZE_MAX - QUANTIZE_MIN
_TOP_LEVEL = QUANTIZE_LEVELS - 1  # 255
# Arithmetic stays in float32, as in YouTube-8M's extractor and readers, so that values on
# a rounding boundary land on the same byte as in the published data.
_STEP = np.float32(_RANGE / _TOP_LEVEL)  # one level: 4/255
# YouTube-8M's starter code (utils.Dequantize) adds range/512 -- about half a level, though
# not exactly (half a level is range/510) -- so dequantized values sit near bin centres
# rather than on the edges. Keeping the same constant makes our dequantized floats identical
# to what models trained on the official data saw.
_BIAS = np.float32(_RANGE / 512.0 + QUANTIZE_MIN)  # -2 + 4/512


def quantize(features: np.ndarray) -> np.ndarray:
    """Quantizes float features to bytes, as YouTube-8M's feature extractor.

    Args:
      features: [..., D] float. Clipped to [QUANTIZE_MIN, QUANTIZE_MAX] (+-inf included).

    Returns:
      [..., D] uint8: round((clip(x) - min) * 255 / range), ties to even (as Python's round()).

    Raises:
      ValueError: if `features` holds NaN, which has no byte.
    """
    values = np.asarray(features, dtype=np.float32)  # [..., D] float32
    if np.isnan(values).any():
        raise ValueError(f"quantize: {int(np.isnan(values).sum())} NaN values in features")
    clipped = np.clip(values, np.float32(QUANTIZE_MIN), np.float32(QUANTIZE_MAX))
    levels = (clipped - np.float32(QUANTIZE_MIN)) * np.float32(_TOP_LEVEL / _RANGE)
    return np.rint(levels).astype(np.uint8)  # [..., D] uint8


def dequantize(quantized: np.ndarray) -> np.ndarray:
    """Maps bytes back to floats exactly as YouTube-8M's starter code (utils.Dequantize).

    Args:
      quantized: [..., D] uint8.

    Returns:
      [..., D] float32: q * range/255 + range/512 + min. Within one level (range/255) of the
      original value for inputs in [QUANTIZE_MIN, QUANTIZE_MAX].

    Raises:
      TypeError: if `quantized` is not uint8 (floats would be silently misread).
    """
    levels = np.asarray(quantized)
    if levels.dtype != np.uint8:
        raise TypeError(f"dequantize: expected uint8 bytes, got dtype {levels.dtype}")
    return levels.astype(np.float32) * _STEP + _BIAS  # [..., D] float32
