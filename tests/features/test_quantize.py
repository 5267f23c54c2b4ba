import numpy as np
import pytest

from features.formats import QUANTIZE_LEVELS, QUANTIZE_MAX, QUANTIZE_MIN
from features.quantize import dequantize, quantize

ONE_LEVEL = (QUANTIZE_MAX - QUANTIZE_MIN) / (QUANTIZE_LEVELS - 1)  # 4/255


def test_round_trip_within_one_level():
    rng = np.random.default_rng(0)
    values = rng.uniform(QUANTIZE_MIN, QUANTIZE_MAX, size=(50, 1024)).astype(np.float32)
    values[0, :3] = [QUANTIZE_MIN, 0.0, QUANTIZE_MAX]
    restored = dequantize(quantize(values))
    assert np.abs(restored - values).max() <= ONE_LEVEL + 1e-6


def test_clips_out_of_range():
    values = np.array([-1e6, -2.5, 2.5, 7.0, -np.inf, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(quantize(values), [0, 0, 255, 255, 0, 255])


def test_known_values():
    values = np.array([-2.0, 2.0, 0.0, -2.0 + ONE_LEVEL, 2.0 - ONE_LEVEL], dtype=np.float32)
    # 0.0 maps to level 127.5, which rounds to even as Python's round() in the official code.
    np.testing.assert_array_equal(quantize(values), [0, 255, 128, 1, 254])
    restored = dequantize(np.array([0, 255, 128], dtype=np.uint8))
    expected = [-2 + 4 / 512, 2 + 4 / 512, 128 * 4 / 255 - 2 + 4 / 512]
    np.testing.assert_allclose(restored, expected, atol=1e-6)
    assert dequantize(np.array([0], dtype=np.uint8))[0] == np.float32(-2 + 4 / 512)


def test_matches_starter_code_formula():
    levels = np.arange(256, dtype=np.uint8)
    expected = levels.astype(np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2)
    np.testing.assert_array_equal(dequantize(levels), expected)


def test_dtype_and_shape():
    values = np.zeros((2, 3, 5), dtype=np.float64)
    quantized = quantize(values)
    assert quantized.dtype == np.uint8 and quantized.shape == (2, 3, 5)
    restored = dequantize(quantized)
    assert restored.dtype == np.float32 and restored.shape == (2, 3, 5)


def test_requantizing_dequantized_bytes_is_identity():
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize(dequantize(levels)), levels)


def test_rejects_nan_and_non_uint8():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match="uint8"):
        dequantize(np.array([0.5, 1.0]))
