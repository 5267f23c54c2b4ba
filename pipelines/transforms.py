"""The extraction job's own steps after DecodeAndEmbed: encode records, write shards and
the dead letter through features.storage, count outcomes."""

import collections
import hashlib
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import tensorflow as tf

from features import labels, records, storage, video_ids
from features.cli import UsageError
from features.formats import AUDIO_KEY, FAILED_PREFIX, HAS_AUDIO_KEY
from features.streams import FeatureSpec
from pipelines.config import FaultPlan
from pipelines.decode_embed import beam_key
from pipelines.elements import EmbeddedVideo, Failure
from pipelines.model_handler import NAMESPACE

COUNTS = "counts"
# Counts combined as a maximum over the videos, not summed: how far any sample strayed.
MAXIMA = ("max_sample_error_s",)
VIDEO_LEVEL = "video_level"
OK_ID = "ok_id"
# Videos encoded so far by each job's EncodeRecords in this process, for FaultPlan's
# fail_after_videos: decode worker threads each hold their own DoFn instance.
_encoded_by_job: collections.Counter[str] = collections.Counter()
_encoded_lock = threading.Lock()
SINGLE_SHARD = "00000-of-00001"


class InjectedFaultError(RuntimeError):
    """A failure a test asked for through a FaultPlan."""


def stable_hash(video_id: str | bytes) -> int:
    """Process-independent hash: the same PCA sample and shard for an id on every run."""
    key = video_id if isinstance(video_id, bytes) else beam_key(video_id)
    return int.from_bytes(hashlib.sha1(key).digest()[:8])


def failure_counts(failure: Failure) -> Iterator[tuple[str, int]]:
    yield "failed", 1
    yield f"failed_by_reason/{failure.reason}", 1


def write_lines(lines: beam.PCollection, path: str, label: str) -> beam.PCollection:
    """All `lines` into one file at `path`, written whole (even when empty); -> [path]."""

    def write(collected: list[str]) -> str:
        storage.write_bytes(path, "".join(line + "\n" for line in sorted(collected)).encode())
        return path

    return lines | f"Collect{label}" >> beam.combiners.ToList() | f"Write{label}" >> beam.Map(write)


def write_failures(failures: beam.PCollection, output: str, run_id: str) -> beam.PCollection:
    """The dead letter: one JSON line per failure in `<output>/failed-<run_id>-*.jsonl`;
    counts videos_failed. Returns the written file's path."""
    failed_counter = beam.metrics.Metrics.counter(NAMESPACE, "videos_failed")

    def to_line(failure: Failure) -> str:
        failed_counter.inc()
        return failure.to_json_line(run_id)

    path = storage.join(output, f"{FAILED_PREFIX}-{run_id}-{SINGLE_SHARD}.jsonl")
    return write_lines(failures | "FailureJson" >> beam.Map(to_line), path, "Failures")


def count_outcomes(failures: beam.PCollection, *counts: beam.PCollection) -> beam.PCollection:
    """One dict: failures (by reason: `failed_by_reason/<reason>`) and the (name, n) counts,
    summed, except MAXIMA, whose largest value is kept."""
    every = (
        failures | "CountFailures" >> beam.FlatMap(failure_counts),
        *counts,
    ) | "AllCounts" >> beam.Flatten()
    sums = (
        every
        | "Summed" >> beam.Filter(lambda named: named[0] not in MAXIMA)
        | "SumCounts" >> beam.CombinePerKey(sum)
    )
    maxima = (
        every
        | "Largest" >> beam.Filter(lambda named: named[0] in MAXIMA)
        | "MaxCounts" >> beam.CombinePerKey(max)
    )
    return (sums, maxima) | "Outcomes" >> beam.Flatten() | "CountsDict" >> beam.combiners.ToDict()


class EncodeRecords(beam.DoFn):
    """EmbeddedVideo -> (beam_key, frame-level record), and tagged: (beam_key, video-level
    record), its id as a done-ids line (OK_ID) and counts. With an audio stream both records'
    context carries has_audio (0/1); without one they are YouTube-8M's rgb-only records."""

    def __init__(self, specs: Sequence[FeatureSpec], faults: FaultPlan | None = None) -> None:
        self._keys = [(spec.name, spec.record_key, spec.mean_key) for spec in specs]
        self._audio = any(spec.name == AUDIO_KEY for spec in specs)
        self._fail_after = (faults or FaultPlan()).fail_after_videos
        self._job = uuid.uuid4().hex  # shared by this step's instances on every thread

    def process(self, embedded: EmbeddedVideo) -> Iterator:
        if self._fail_after >= 0:
            with _encoded_lock:
                encoded = _encoded_by_job[self._job]
                _encoded_by_job[self._job] += 1
            if encoded >= self._fail_after:
                raise InjectedFaultError(f"failing after {encoded} videos, as the FaultPlan asks")
        video_id, labels = embedded.video.video_id, list(embedded.video.labels)
        frame_lists = {key: embedded.features[name] for name, key, _ in self._keys}
        means = {mean_key: embedded.means[name] for name, _, mean_key in self._keys}
        key = beam_key(video_id)
        summary = embedded.summary
        context = {HAS_AUDIO_KEY: int(summary.has_audio)} if self._audio else None
        yield key, records.encode_frame_example(video_id, labels, frame_lists, context=context)
        video_record = records.encode_video_example(video_id, labels, means, context=context)
        yield beam.pvalue.TaggedOutput(VIDEO_LEVEL, (key, video_record))
        yield beam.pvalue.TaggedOutput(OK_ID, video_ids.encode_id_line(video_id))
        frames = len(next(iter(frame_lists.values())))
        yield beam.pvalue.TaggedOutput(COUNTS, ("ok", 1))
        yield beam.pvalue.TaggedOutput(COUNTS, ("frames", frames))
        if summary.truncated:
            yield beam.pvalue.TaggedOutput(COUNTS, ("truncated", 1))
        if self._audio and not summary.has_audio:
            yield beam.pvalue.TaggedOutput(COUNTS, ("no_audio", 1))
        if self._audio and summary.audio_truncated:
            yield beam.pvalue.TaggedOutput(COUNTS, ("audio_truncated", 1))
        if summary.hw_decoded:
            yield beam.pvalue.TaggedOutput(COUNTS, ("hw_decoded", 1))
        if summary.hw_decode_fallback:
            yield beam.pvalue.TaggedOutput(COUNTS, ("hw_decode_fallbacks", 1))
        yield beam.pvalue.TaggedOutput(COUNTS, ("max_sample_error_s", summary.max_sample_error_s))
        if not embedded.video.labeled:
            yield beam.pvalue.TaggedOutput(COUNTS, ("unlabeled", 1))


class _WriteShard(beam.DoFn):
    def __init__(self, prefix: str, num_shards: int, suffix: str) -> None:
        self._prefix = prefix
        self._num_shards = num_shards
        self._suffix = suffix

    def process(self, shard: tuple[int, Iterable[tuple[bytes, bytes]]]) -> Iterator[str]:
        index, keyed_records = shard
        path = f"{self._prefix}-{index:05d}-of-{self._num_shards:05d}{self._suffix}"
        with storage.local_output(path) as local, tf.io.TFRecordWriter(local) as writer:
            for _, record in keyed_records:
                writer.write(record)
        yield path


class WriteShards(beam.PTransform):
    """(id, record) -> TFRecord shards `<prefix>-SSSSS-of-NNNNN<suffix>`, each written whole
    through features.storage (a retried shard is rewritten, never half there); -> paths.
    A video's shard is a hash of its id, so reruns place ids alike."""

    def __init__(self, prefix: str, num_shards: int, suffix: str) -> None:
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards
        self._suffix = suffix

    def expand(self, keyed_records: beam.PCollection) -> beam.PCollection:
        shards = self._num_shards
        return (
            keyed_records
            | "ShardKey" >> beam.Map(lambda kv: (stable_hash(kv[0]) % shards, kv))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._prefix, shards, self._suffix))
        )


def run_to_end(pipeline: beam.Pipeline, wait: bool = True) -> beam.runners.runner.PipelineResult:
    """Runs the job (and waits for it); a failure inside a step surfaces as its own error
    (Beam wraps it in a RuntimeError whose text holds a whole traceback)."""
    try:
        result = pipeline.run()
        if wait:
            result.wait_until_finish()
    except Exception as error:  # noqa: BLE001 -- unwrapped below, or re-raised as is
        raise step_error(error) from None
    return result


def step_error(error: BaseException) -> BaseException:
    """The error a step raised, found in the chain Beam built around it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, UsageError | OSError | InjectedFaultError | labels.LabelError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return error
