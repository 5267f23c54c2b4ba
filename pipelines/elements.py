"""Values that flow between the extraction job's steps, keyed by video id."""

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoInput:
    """A matched video with its resolved label indices."""

    video_id: str
    path: str
    labels: tuple[int, ...]
    labeled: bool  # False when --labels has no row for this id

    def to_json_line(self) -> str:
        """JSON escapes any id or path (newlines, bytes that are not UTF-8), one per line."""
        fields = {"id": self.video_id, "path": self.path, "labels": list(self.labels)}
        return json.dumps({**fields, "labeled": self.labeled}, sort_keys=True)

    @classmethod
    def from_json_line(cls, line: str) -> "VideoInput":
        fields = json.loads(line)
        return cls(fields["id"], fields["path"], tuple(fields["labels"]), fields["labeled"])


@dataclass(frozen=True)
class DecodeSummary:
    """What decoding one video produced; joined with its chunks to assemble records."""

    video: VideoInput
    frames: int
    truncated: bool
    error: str
    span_s: float
    display_size: tuple[int, int] = (0, 0)  # (height, width) of the upright picture
    thumbnail: np.ndarray | None = None  # [H, W, 3] uint8 middle frame, when asked for
    # With an audio stream computed (else both False):
    has_audio: bool = False  # the file has an audio track (a silent one counts)
    audio_truncated: bool = False  # the audio broke off early; what decoded is kept
    max_sample_error_s: float = 0.0  # largest |chosen frame's time - sample time|
    hw_decoded: bool = False  # decoded on the GPU
    hw_decode_fallback: bool = False  # the GPU refused it; decoded on the CPU


@dataclass(frozen=True)
class QuantizedChunk:
    """Consecutive frames of one stream of one video; `error` set when the CNN, the PCA or
    the quantizer failed on them (the video then fails as embed_error)."""

    start_index: int
    quantized: np.ndarray | None  # [n, K] uint8
    feature_sum: np.ndarray | None  # [K] float64, of the whitened features before quantization
    error: str = ""


@dataclass(frozen=True)
class EmbeddedVideo:
    """A video with every stream embedded: what DecodeAndEmbed hands to records or tagging."""

    video: VideoInput
    features: dict[str, np.ndarray]  # stream name -> [T, K] uint8 quantized frames
    means: dict[str, np.ndarray]  # stream name -> [K] float32, mean whitened frame
    summary: DecodeSummary  # of the video's one decode pass (rgb and audio)


@dataclass(frozen=True)
class Failure:
    """One input in the dead letter; `reason` is a short machine-readable word."""

    path: str
    video_id: str
    reason: str
    detail: str

    def to_json_line(self, run_id: str) -> str:
        """One framevlad.FailedInput as a JSON line. Written with json, not json_format: a
        path may hold bytes that are not UTF-8 (surrogate escapes), which a proto string
        refuses and a JSON `\\udcXX` escape keeps, so the line leads back to the file."""
        fields = {"path": self.path, "video_id": self.video_id, "reason": self.reason}
        fields |= {"detail": self.detail, "run_id": run_id}
        return json.dumps(fields, sort_keys=True)
