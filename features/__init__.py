"""Pure numpy/TensorFlow building blocks: decoding, backbones, PCA, quantization, records."""
