"""Settings of one extraction run, and where a test makes it fail; parsed by the entry point.

Light on purpose: no TensorFlow, Keras or Beam import, so the entry point can build and
check a config before anything heavy loads.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from features.cli import UsageError
from features.decoding import DECODE_FAST, DEVICE_GPU, gpu_decode_problem
from features.formats import C3D_KEY, FLOW_KEY, I3D_KEY, RGB_KEY
from features.streams import FeatureSpec
from pipelines.beam_options import runs_on_dataflow

# Streams cut from consecutive source frames: fast decoding would leave holes in them.
EVERY_FRAME_STREAMS = (FLOW_KEY, I3D_KEY, C3D_KEY)


@dataclass(frozen=True)
class FaultPlan:
    """Where a test makes a run fail; production runs pass None (no fault).

    `fail_after_videos` and `fail_before_commit` crash the whole job (crash-and-rerun
    tests); `fail_embed_ids` makes the CNN raise for those video ids and `nan_embed_ids`
    makes it return NaN (the quantizer then refuses it): one video fails, not the job.
    """

    fail_after_videos: int = -1  # the record encoder raises after this many (per process)
    fail_before_commit: bool = False
    fail_embed_ids: frozenset[str] = frozenset()
    nan_embed_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ExtractConfig:
    """One run of `extract_features`: what to read, how to embed it, where to write it."""

    input: str  # --input as given, made absolute
    input_pattern: str  # a glob, or the folder to walk when match_folder
    match_folder: bool  # --input named a folder: walk it, keep video extensions only
    output: str
    id_root: str
    run_id: str
    specs: tuple[FeatureSpec, ...]  # the streams to compute: (rgb,) or (rgb, audio)
    max_frames: int  # 0 = no cap
    frames_per_batch: int
    labels_csv: str = ""
    labels_from_folders: bool = False
    vocabulary: str = ""
    num_shards: int = 0  # 0 = about one shard per 1,000 videos
    skip_existing: bool = False
    lease_timeout_s: float = 86400.0
    break_lease: bool = False
    beam_args: tuple[str, ...] = ()

    @property
    def rgb(self) -> FeatureSpec:
        """The first stream: its backbone, weights and PCA are the manifest's top level."""
        return self.specs[0]

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def validate(self, feature_dims: dict[str, int]) -> None:
        """Cross-field rules, in one place; `feature_dims` maps each backbone (vggish too)
        to its width.

        Single-flag ranges (finite, >= 1, ...) are the parser's; these involve two flags."""
        if not self.specs or self.specs[0].name != RGB_KEY:
            raise UsageError("rgb must be the first stream", "--streams", "pass rgb or rgb,audio")
        for spec in self.specs:
            dims = feature_dims[spec.backbone]
            if not 1 <= spec.dims <= dims:
                raise UsageError(
                    f"{spec.backbone} gives {dims}-d features",
                    f"{spec.flag('--pca_dims')} {spec.dims}",
                    f"choose 1..{dims}",
                )
        needy = [name for name in self.stream_names if name in EVERY_FRAME_STREAMS]
        if self.rgb.decode == DECODE_FAST and needy:
            raise UsageError(
                f"it skips frames, and --streams {','.join(needy)} needs every source frame",
                "--decode fast",
                "pass --decode exact, or leave flow, i3d and c3d out of --streams",
            )
        if self.labels_csv and self.labels_from_folders:
            raise UsageError(
                "two label sources",
                "--labels and --labels_from_folders",
                "pass one of them",
            )
        root = self.id_root.rstrip("/") + "/"
        if not (self.input_pattern + "/").startswith(root):
            raise UsageError(
                f"--input {self.input} is not under the id root",
                f"--id_root {self.id_root}",
                "pass a folder that holds the input",
            )


def check_decode_device(decode_device: str, beam_args: Sequence[str]) -> None:
    """--decode_device gpu on a job that runs on this machine, which has no GPU decoder: one
    line before any work. A job on Dataflow is checked by its workers, which have the GPU."""
    if decode_device != DEVICE_GPU:
        return
    if runs_on_dataflow(beam_args):
        return
    problem = gpu_decode_problem()
    if problem:
        raise UsageError(problem, "--decode_device gpu", "pass --decode_device auto or cpu")
