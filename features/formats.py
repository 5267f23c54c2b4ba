"""Constants that define the YouTube-8M feature and record formats, in one place."""

# Backbone names, in the registry's order (features.backbones checks it matches): `--help`
# lists the choices without importing Keras.
BACKBONE_NAMES = ("inception_v3", "resnet50", "efficientnet_b0", "mobilenet_v3_small", "tiny")
DEFAULT_BACKBONE = "inception_v3"

# Frame sampling, as YouTube-8M: one frame per second, at most 300 frames per video.
DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 300
# How a stream's CNN computes (features.precision): the manifest records it.
FLOAT32 = "float32"
MIXED = "mixed"
PRECISIONS = (FLOAT32, MIXED)

# PCA: YouTube-8M keeps 1024 whitened dimensions of Inception's 2048.
MAX_PCA_DIMS = 1024
# Whitening epsilon of YouTube-8M's published PCA (absolute).
YT8M_PCA_EPSILON = 1e-4
# Whitening epsilon of a self-fitted PCA, as a fraction of the largest eigenvalue: random and
# ImageNet backbones differ in feature scale by orders of magnitude.
RELATIVE_PCA_EPSILON = 1e-4
DEFAULT_PCA_SAMPLE_FRAMES = 50_000

# 8-bit quantization of whitened features.
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0
QUANTIZE_LEVELS = 256

# Record keys.
ID_KEY = "id"
LEGACY_ID_KEY = "video_id"
LABELS_KEY = "labels"
RGB_KEY = "rgb"
AUDIO_KEY = "audio"
FLOW_KEY = "flow"
I3D_KEY = "i3d"
C3D_KEY = "c3d"
FOVEA_KEY = "fovea"
MEAN_RGB_KEY = "mean_rgb"
MEAN_AUDIO_KEY = "mean_audio"
# Context int64 0/1 in frame- and video-level records of outputs with an audio stream.
HAS_AUDIO_KEY = "has_audio"

# Feature streams, in record order: rgb is always computed and comes first.
STREAM_NAMES = (RGB_KEY, AUDIO_KEY, FLOW_KEY, I3D_KEY, C3D_KEY, FOVEA_KEY)
DEFAULT_STREAMS = (RGB_KEY, AUDIO_KEY)

# The audio stream: VGGish embeddings of 0.96 s log-mel examples [96 frames, 64 bands].
VGGISH_BACKBONE = "vggish"
AUDIO_FRAME_SIZE = (96, 64)
AUDIO_DIMS = 128

# Motion and clip streams, one row per rgb sample (sample i's frame is source frame j):
# flow stacks the optical flow of the FLOW_PAIRS source-frame pairs from j on (two-stream
# networks' temporal stream, L = 10), each displacement clipped to +-FLOW_CLIP_PX pixels and
# stored as uint8 (127.5 = no motion); i3d and c3d see CLIP_FRAMES source frames j - 8 ... j + 7.
FLOW_PAIRS = 10
FLOW_CLIP_PX = 20.0
CLIP_FRAMES = 16
# C3D (Tran et al. 2015): 16 frames of 112 x 112, fc6 is 4096-d; PCA keeps 512 by default.
C3D_BACKBONE = "c3d"
C3D_FRAME_SIZE = (112, 112)
C3D_FEATURE_DIMS = 4096
C3D_DIMS = 512

# Output layout under --output.
FRAME_DIR = "frame"
VIDEO_DIR = "video"
PCA_FILE = "pca.npz"
AUDIO_PCA_FILE = "audio_pca.npz"
VOCABULARY_FILE = "vocabulary.csv"
MANIFEST_FILE = "manifest.json"
FAILED_PREFIX = "failed"
RECORD_SUFFIX = ".tfrecord"
