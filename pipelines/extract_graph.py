"""The extraction job's graph: videos → DecodeAndEmbed → records, dead letter → commit.

Everything decided before the job (which videos, their labels, the vocabulary, the PCA)
arrives in a RunPlan; the graph only embeds and writes, then commits last.
"""

from dataclasses import dataclass, field

import apache_beam as beam

from features import storage
from features.formats import FRAME_DIR, RECORD_SUFFIX, VIDEO_DIR
from features.labels import Vocabulary
from framevlad_proto import framevlad_pb2
from pipelines import manifest, runs
from pipelines.config import ExtractConfig, FaultPlan
from pipelines.decode_embed import DecodeAndEmbed
from pipelines.elements import Failure, VideoInput
from pipelines.transforms import (
    COUNTS,
    OK_ID,
    SINGLE_SHARD,
    VIDEO_LEVEL,
    EncodeRecords,
    InjectedFaultError,
    WriteShards,
    count_outcomes,
    write_failures,
    write_lines,
)

VIDEOS_PER_LIST = 1000


@dataclass
class RunPlan:
    """What the launcher decided before the job: the graph's inputs and manifest parts."""

    videos: list[VideoInput]
    input_lists: list[str]  # where the launcher wrote `videos` for the workers to read
    failures: list[Failure]  # found before the job: unreadable, duplicate_id, unknown_label
    vocabulary: Vocabulary
    streams: tuple[framevlad_pb2.StreamInfo, ...]  # for the manifest
    pca_paths: dict[str, str]  # stream name -> pca.npz the workers read
    num_shards: int
    counts: dict[str, int] = field(default_factory=dict)  # seen, skipped, ... known up front


def write_input_lists(output: str, run_id: str, videos: list[VideoInput]) -> list[str]:
    """Hands the launcher's list of videos to the workers as files of VIDEOS_PER_LIST JSON
    lines, `manifests/<run_id>-inputs-SSSSS.jsonl`, so that the job graph stays small however
    large the library (a graph holding a 500k-video list would exceed Dataflow's limit)."""
    paths = []
    for start in range(0, len(videos), VIDEOS_PER_LIST):
        chunk = videos[start : start + VIDEOS_PER_LIST]
        path = storage.join(output, runs.MANIFESTS_DIR, f"{run_id}-inputs-{len(paths):05d}.jsonl")
        storage.write_text(path, "".join(video.to_json_line() + "\n" for video in chunk))
        paths.append(path)
    return paths


def read_input_list(path: str) -> list[VideoInput]:
    return [VideoInput.from_json_line(line) for line in storage.read_text(path).splitlines()]


def build_pipeline(
    pipeline: beam.Pipeline,
    config: ExtractConfig,
    plan: RunPlan,
    faults: FaultPlan | None = None,
    progress_token: str = "",
) -> None:
    """Adds the extraction steps to `pipeline`; the commit step runs once every file is final."""
    videos = (
        pipeline
        | "InputLists" >> beam.Create(plan.input_lists)
        | "ReadInputs" >> beam.FlatMap(read_input_list)
        | "Spread" >> beam.Reshuffle()
    )
    embedded, embed_failures = videos | "DecodeAndEmbed" >> DecodeAndEmbed(
        config.specs,
        plan.pca_paths,
        config.frames_per_batch,
        config.max_frames,
        faults=faults,
        progress_token=progress_token,
    )
    encoded = embedded | "EncodeRecords" >> beam.ParDo(
        EncodeRecords(config.specs, faults)
    ).with_outputs(VIDEO_LEVEL, OK_ID, COUNTS, main="frame")
    shards = (plan.num_shards, RECORD_SUFFIX)
    frame_prefix = storage.join(config.output, FRAME_DIR, config.run_id)
    video_prefix = storage.join(config.output, VIDEO_DIR, config.run_id)
    launcher_failures = pipeline | "LauncherFailures" >> beam.Create(plan.failures)
    failures = (launcher_failures, embed_failures) | "AllFailures" >> beam.Flatten()
    ids_path = storage.join(
        config.output, runs.MANIFESTS_DIR, f"{config.run_id}-ids-{SINGLE_SHARD}.jsonl"
    )
    written = {
        "frame_records": encoded.frame | "WriteFrames" >> WriteShards(frame_prefix, *shards),
        "video_records": encoded[VIDEO_LEVEL] | "WriteVideos" >> WriteShards(video_prefix, *shards),
        "failed_records": write_failures(failures, config.output, config.run_id),
        "ok_ids_files": write_lines(encoded[OK_ID], ids_path, "Ids"),
    }
    counts = count_outcomes(failures, encoded[COUNTS])
    side_inputs = {key: beam.pvalue.AsList(paths) for key, paths in written.items()}
    _ = counts | "Commit" >> beam.Map(
        commit_step,
        config=config,
        # Serialized: Beam's pickler cannot pickle proto messages by value.
        streams=[stream.SerializeToString() for stream in plan.streams],
        vocabulary=plan.vocabulary,
        launcher_counts=plan.counts,
        faults=faults or FaultPlan(),
        **side_inputs,
    )


def commit_step(
    job_counts: dict[str, float],
    config: ExtractConfig,
    streams: list[bytes],
    vocabulary: Vocabulary,
    launcher_counts: dict[str, int],
    faults: FaultPlan,
    **written: list[str],
) -> None:
    """Runs after every file is final (they are side inputs): writes the commit marker.
    (Not handed the whole RunPlan: its video list would be pickled into the graph twice.)"""
    if faults.fail_before_commit:
        raise InjectedFaultError("failing before the commit, as the FaultPlan asks")
    counts = {**job_counts, **launcher_counts}
    stream_infos = tuple(framevlad_pb2.StreamInfo.FromString(stream) for stream in streams)
    built = manifest.build_manifest(config, stream_infos, counts, vocabulary, written)
    runs.commit(config.output, built, vocabulary)
    runs.release_lease(config.output, config.run_id)
