"""The launcher side of `extract_features`: everything before and around the Beam job.

Under the output's lease: set aside what unfinished runs left, match the inputs, drop the
ones committed runs hold (--skip_existing), resolve labels against the frozen vocabulary,
load or fit the PCA, then build and run the job with a progress line. Heavy (Beam, Keras):
the entry point imports this module only once flags are parsed.
"""

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from features import labels, lease, storage
from features.cli import UsageError
from features.formats import RGB_KEY
from features.labels import Vocabulary
from features.streams import decode_mode, stream_info
from framevlad_proto import framevlad_pb2
from pipelines import runs
from pipelines.config import ExtractConfig, FaultPlan
from pipelines.extract_graph import RunPlan, build_pipeline, write_input_lists
from pipelines.inputs import ResolvedInput, find_inputs, no_videos_error
from pipelines.labeling import choose_vocabulary, label_videos
from pipelines.pca_fit import prepare_pcas
from pipelines.progress import Progress
from pipelines.stream_weights import resolve_spec_weights
from pipelines.transforms import run_to_end

PROG = "extract_features"
VIDEOS_PER_SHARD = 1000
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")


def execute(
    config: ExtractConfig,
    pipeline: beam.Pipeline | None,
    faults: FaultPlan | None,
    wait: bool = True,
) -> beam.runners.runner.PipelineResult | None:
    """Runs one extraction under the output's lease; None for a dry run.

    The job gives the lease back at its commit. With `wait` False (a Flex Template launcher,
    which must return once the job is submitted) the launcher keeps its hands off the lease
    after submitting; a job that dies on Dataflow leaves it to --lease_timeout/--break_lease."""
    options = pipeline.options if pipeline is not None else PipelineOptions(config.beam_args)
    options.view_as(SetupOptions).save_main_session = False
    held = lease.acquire(
        config.output, PROG, config.lease_timeout_s, config.break_lease, run_id=config.run_id
    )
    try:
        result = run_leased(config, pipeline, options, faults, wait)
    except BaseException:
        held.release()
        raise
    if wait or result is None:
        held.release()
    return result


def run_leased(
    config: ExtractConfig,
    pipeline: beam.Pipeline | None,
    options: PipelineOptions,
    faults: FaultPlan | None,
    wait: bool,
) -> beam.runners.runner.PipelineResult | None:
    """Everything the lease guards: set-aside, plan, PCA, the job."""
    dry_run = options.view_as(TestOptions).dry_run
    committed = runs.committed_runs(config.output)
    if committed and not config.skip_existing:
        raise UsageError(
            f"holds {len(committed)} committed run(s)",
            f"--output {config.output}",
            "pass --skip_existing to add new videos to it, or choose another --output",
        )
    if not dry_run:
        moved = runs.set_aside_uncommitted(config.output, {run.run_id for run in committed})
        if moved:
            print(f"{PROG}: set aside {len(moved)} file(s) of unfinished runs")
    plan = plan_run(config, options, committed, dry_run)
    pipeline = pipeline or beam.Pipeline(options=options)
    runner = options.view_as(StandardOptions).runner
    show = runner in LOCAL_RUNNERS and not dry_run
    with Progress(PROG, len(plan.videos)) if show else _NoProgress() as shown:
        build_pipeline(pipeline, config, plan, faults, progress_token=shown.token)
        if not dry_run:
            return run_to_end(pipeline, wait)
        print(describe_job(config, options, plan))
        if runner not in LOCAL_RUNNERS:
            run_to_end(pipeline, wait)  # Dataflow validates a dry run; locally it would run
        return None


def plan_run(
    config: ExtractConfig,
    options: PipelineOptions,
    committed: list[framevlad_pb2.Manifest],
    dry_run: bool,
) -> RunPlan:
    """Decides, before the job, which videos it embeds with which labels and PCA."""
    resolved = ResolvedInput(
        config.input, config.input_pattern, config.match_folder, config.id_root
    )
    found = find_inputs(resolved)
    if not found.videos:
        raise no_videos_error(resolved, found)
    done = runs.done_ids(config.output, committed) if committed else set()
    todo = [(video_id, path) for video_id, path in found.videos if video_id not in done]
    labeled = label_videos(
        todo,
        {video_id for video_id, _ in found.videos},
        read_labels(config.labels_csv),
        config.labels_from_folders,
        lambda names: choose_vocabulary(
            names,
            read_vocabulary(config.vocabulary),
            runs.committed_vocabulary(config.output, committed),
            config.output,
        ),
    )
    if committed:
        check_same_streams(config, committed[-1])
    weights = {spec.name: resolve_spec_weights(spec, load=True) for spec in config.specs}
    pcas = prepare_pcas(config, options, found, dry_run, bool(committed))
    streams = [stream_info(spec, weights[spec.name], pcas[spec.name][0]) for spec in config.specs]
    pca_paths = {name: path for name, (_, path) in pcas.items()}
    if committed and not dry_run:
        check_compatible(config, committed[-1], streams)
    counts = {
        "seen": found.seen,
        "skipped": len(found.videos) - len(todo),
        "labels_without_video": labeled.labels_without_video,
        "conflicting_label_rows": labeled.conflicting_label_rows,
        **{f"skipped_extension/{ext}": n for ext, n in found.skipped_extension.items()},
    }
    lists = [] if dry_run else write_input_lists(config.output, config.run_id, labeled.videos)
    return RunPlan(
        videos=labeled.videos,
        input_lists=lists,
        failures=found.failures + labeled.failures,
        vocabulary=labeled.vocabulary,
        streams=tuple(streams),
        pca_paths=pca_paths,
        num_shards=config.num_shards or max(1, -(-len(labeled.videos) // VIDEOS_PER_SHARD)),
        counts=counts,
    )


def read_labels(path: str) -> labels.LabelTable | None:
    if not path:
        return None
    return labels.read_label_table(storage.read_bytes(path), source=f"--labels {path}")


def read_vocabulary(path: str) -> Vocabulary | None:
    if not path:
        return None
    return Vocabulary.from_csv(storage.read_text(path), source=f"--vocabulary {path}")


def check_same_streams(config: ExtractConfig, latest: framevlad_pb2.Manifest) -> None:
    """--skip_existing adds the committed runs' feature lists, no more and no fewer."""
    committed = tuple(stream.name for stream in latest.streams)
    if committed != config.stream_names:
        raise UsageError(
            f"this run's streams ({','.join(config.stream_names)}) differ from the committed "
            f"runs' ({','.join(committed)})",
            f"--skip_existing --output {config.output}",
            f"pass --streams {','.join(committed)}, or choose a new --output",
        )


def check_compatible(
    config: ExtractConfig,
    latest: framevlad_pb2.Manifest,
    streams: list[framevlad_pb2.StreamInfo],
) -> None:
    """--skip_existing adds to an output only in the same feature space and id scheme."""
    differs = {
        "id root": latest.id_root != config.id_root,
        "fps": latest.fps != config.rgb.fps,
        "decode mode": decode_mode(latest) != config.rgb.decode,
    }
    for committed, stream in zip(latest.streams, streams, strict=True):
        # Weights are the same when their content is (a cache path differs between machines).
        same_weights = all(
            getattr(committed.weights, field) == getattr(stream.weights, field)
            for field in ("kind", "sha256", "seed")
        )
        prefix = "" if stream.name == RGB_KEY else f"{stream.name} "
        differs[f"{prefix}backbone"] = committed.backbone != stream.backbone or not same_weights
        differs[f"{prefix}PCA"] = committed.pca.sha256 != stream.pca.sha256
    mismatches = [name for name, differ in differs.items() if differ]
    if mismatches:
        raise UsageError(
            f"this run's {', '.join(mismatches)} differs from the committed runs'",
            f"--skip_existing --output {config.output}",
            "use the committed runs' settings (see its manifest.json) or a new --output",
        )


def describe_job(config: ExtractConfig, options: PipelineOptions, plan: RunPlan) -> str:
    """What a dry run would submit."""
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        WorkerOptions,
    )

    workers, debug = options.view_as(WorkerOptions), options.view_as(DebugOptions)
    cloud = options.view_as(GoogleCloudOptions)
    lines = [
        f"runner:              {options.view_as(StandardOptions).runner or 'DirectRunner'}",
        f"project / region:    {cloud.project} / {cloud.region}",
        f"input:               {config.input_pattern} ({len(plan.videos)} videos to embed)",
        f"output:              {config.output}",
        f"machine type:        {workers.machine_type}",
        f"workers:             {workers.num_workers} initial, {workers.max_num_workers} max",
        f"service options:     {cloud.dataflow_service_options}",
        f"container image:     {workers.sdk_container_image}",
        f"harness threads:     {debug.number_of_worker_harness_threads}",
        f"experiments:         {debug.experiments}",
        f"backbone:            {config.rgb.backbone} ({config.rgb.weights}), "
        f"{config.frames_per_batch} frames per batch",
        f"decode:              {config.rgb.decode}, on {config.rgb.decode_device}",
        f"pca:                 {plan.streams[0].pca.source}",
    ]
    for spec, stream in zip(config.specs[1:], plan.streams[1:], strict=True):
        label = f"{spec.name}:"
        lines.append(f"{label:<21}{spec.backbone} ({spec.weights}), pca {stream.pca.source}")
    return "dry run: the job is built and validated, not submitted\n  " + "\n  ".join(lines)


class _NoProgress:
    """Off the local runner the Beam counters show progress instead."""

    token = ""

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None
