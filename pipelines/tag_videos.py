"""`tag_videos`: tag a video library (raw videos or frame-level TFRecords) with a model, or
an ensemble of models whose probabilities are averaged.

    tag_videos --model model/ --input videos/ --output tags/ [--top_k 5] [Beam options]
    tag_videos --model rgb_model/ --model flow_model/ [--ensemble_weights 0.6,0.4] ...

Writes `<output>/tags.parquet` + `tags.csv` (id, path, rank, label_index, label_name, score),
`segments.parquet` (id, start_s, end_s, label_index, label_name, score), `predictions.csv`
(Kaggle VideoId,LabelConfidencePairs), `failed-<run_id>.jsonl`, `report/index.html` and,
last, `tagging.json`. Each appears whole or not at all; an output holding an earlier run's
files is refused unless --overwrite.
"""

import dataclasses
import json
import secrets
import sys
import time
from dataclasses import dataclass

from features import cli, lease, storage
from features.cli import UsageError
from features.decoding import DECODE_DEVICES, DEVICE_AUTO
from features.formats import FLOAT32, PRECISIONS
from pipelines.compute_flags import (
    DEFAULT_FRAMES_PER_BATCH,
    JIT_SETTINGS,
    add_compute_flags,
    check_precision_here,
    resolve_frames_per_batch,
    with_decode_workers,
)
from pipelines.config import FaultPlan, check_decode_device
from pooling_models.config import normalized_weights, split_weights

PROG = "tag_videos"
INPUT_KINDS = ("auto", "videos", "records")


@dataclass(frozen=True)
class TagConfig:
    """One run of `tag_videos`; `validate()` holds every rule, so a config a test builds is
    checked exactly as one parsed from flags."""

    model: str  # as given, made absolute: tagging.json records it
    input: str
    output: str
    extra_models: tuple[str, ...] = ()  # further --model flags: an ensemble
    ensemble_weights: tuple[float, ...] = ()  # as given, one per model; empty: equal
    input_kind: str = "auto"
    top_k: int = 5
    min_score: float = 0.0
    segment_seconds: float = 5.0
    smooth: int = 3
    frames_per_batch: int = DEFAULT_FRAMES_PER_BATCH  # 0: auto, sized for this machine's GPU
    decode_device: str = DEVICE_AUTO  # where raw videos decode; the mode is the manifest's
    precision: str = FLOAT32  # the CNNs' on raw videos
    jit_compile: bool | None = None  # XLA for the CNNs; None: where a GPU is present
    overwrite: bool = False
    lease_timeout_s: float = lease.DEFAULT_LEASE_TIMEOUT_S
    break_lease: bool = False
    beam_args: tuple[str, ...] = ()

    def validate(self) -> "TagConfig":
        """Every rule in one place; the parser's flag types check the same ranges first."""
        finite, kinds = float("inf"), "|".join(INPUT_KINDS)
        rules = [
            ("--input_kind", self.input_kind, self.input_kind in INPUT_KINDS, kinds),
            ("--top_k", self.top_k, self.top_k >= 1, "an integer >= 1"),
            ("--min_score", self.min_score, 0 <= self.min_score <= 1, "a probability in [0, 1]"),
            ("--segment_seconds", self.segment_seconds, 0 < self.segment_seconds < finite, "> 0"),
            ("--smooth", self.smooth, self.smooth >= 1, "an integer >= 1"),
            (
                "--frames_per_batch",
                self.frames_per_batch,
                self.frames_per_batch >= 0,
                "auto or >= 1",
            ),
            ("--precision", self.precision, self.precision in PRECISIONS, "|".join(PRECISIONS)),
            (
                "--decode_device",
                self.decode_device,
                self.decode_device in DECODE_DEVICES,
                "|".join(DECODE_DEVICES),
            ),
            ("--lease_timeout", self.lease_timeout_s, 0 < self.lease_timeout_s < finite, "> 0"),
        ]
        for flag, value, holds, wanted in rules:
            if not holds:
                raise UsageError("out of range", f"{flag} {value}", f"pass {wanted}")
        taken = [url.rstrip("/") for url in (*self.models, self.input)]
        if self.output.rstrip("/") in taken:
            raise UsageError(
                "is also --model or --input", f"--output {self.output}", "write to a new folder"
            )
        normalized_weights(self.ensemble_weights, len(self.models))
        return self

    @property
    def models(self) -> tuple[str, ...]:
        """Every --model, in the order given."""
        return (self.model, *self.extra_models)

    @property
    def model_weights(self) -> tuple[float, ...]:
        """One weight per model, summing to 1."""
        return normalized_weights(self.ensemble_weights, len(self.models))


def build_parser() -> cli.Parser:
    from pipelines.beam_options import beam_option_names
    from pipelines.extract_flags import add_decode_flags

    parser = cli.Parser(
        PROG,
        __doc__.split("\n\n")[0],
        passthrough=beam_option_names,
        epilog="Beam's own flags (e.g. --runner, --direct_num_workers) are passed to Beam.",
    )
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        help="a train_pool model directory; repeat it for an ensemble, whose probabilities "
        "are averaged (the models must share a vocabulary)",
    )
    parser.add_argument(
        "--ensemble_weights",
        default="",
        help="comma-separated, one per --model, scaled to sum to 1; empty: equal weights",
    )
    parser.add_argument("--input", required=True, help="videos (folder, glob, gs://) or records")
    parser.add_argument(
        "--input_kind",
        choices=INPUT_KINDS,
        default="auto",
        help="auto: TFRecord files (by their framing, whatever their names) are frame-level "
        "records, anything else videos",
    )
    parser.add_argument("--output", required=True, help="folder for tags, segments and report")
    parser.add_argument("--top_k", type=cli.int_at_least(1), default=5, help="tags per video")
    parser.add_argument(
        "--min_score", type=cli.probability, default=0.0, help="drop tags below this"
    )
    parser.add_argument(
        "--segment_seconds", type=cli.positive_float, default=5.0, help="segment length"
    )
    parser.add_argument(
        "--smooth", type=cli.int_at_least(1), default=3, help="segments in the rolling mean"
    )
    add_compute_flags(parser)
    # Raw videos decode as the model's manifest records (--decode); only the device is ours.
    add_decode_flags(parser, modes=False)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run's outputs in --output"
    )
    parser.add_argument(
        "--lease_timeout",
        type=cli.positive_float,
        default=lease.DEFAULT_LEASE_TIMEOUT_S,
        help="seconds after which another run's lease on --output counts as stale",
    )
    parser.add_argument(
        "--break_lease", action="store_true", help="take over a stale lease on --output"
    )
    return parser


def config_from_flags(args, beam_args: list[str]) -> TagConfig:  # args: argparse.Namespace
    first, *others = (storage.absolute(model) for model in args.model)
    return TagConfig(
        model=first,
        input=storage.absolute(args.input),
        output=storage.absolute(args.output),
        extra_models=tuple(others),
        ensemble_weights=split_weights(args.ensemble_weights),
        input_kind=args.input_kind,
        top_k=args.top_k,
        min_score=args.min_score,
        segment_seconds=args.segment_seconds,
        smooth=args.smooth,
        frames_per_batch=args.frames_per_batch,
        decode_device=args.decode_device,
        precision=args.precision,
        jit_compile=JIT_SETTINGS[args.jit_compile],
        overwrite=args.overwrite,
        lease_timeout_s=args.lease_timeout,
        break_lease=args.break_lease,
        beam_args=with_decode_workers(args.decode_workers, beam_args),
    ).validate()


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def run(config: TagConfig, pipeline=None, faults: FaultPlan | None = None) -> dict:
    """Tags `config.input` into `config.output` and returns tagging.json's content.

    `pipeline` (e.g. a TestPipeline) replaces the one built from `config.beam_args`; faults
    make a test run fail where a real one might."""
    from pipelines import report, tagging_outputs, tagging_plan, tagging_steps

    config.validate()
    storage.check_bucket(config.output, "--output")
    models = tagging_plan.load_ensemble(config.models, config.model_weights)
    tagging_inputs = tagging_plan.find_inputs(config.input, config.input_kind, models.feature_names)
    specs = models.specs
    if tagging_inputs.kind == "videos":
        tagging_plan.check_video_ensemble(models)
        check_decode_device(config.decode_device, config.beam_args)
        check_precision_here(config.precision, config.beam_args)
        specs = tuple(
            dataclasses.replace(
                spec,
                decode_device=config.decode_device,
                precision=config.precision,
                jit_compile=config.jit_compile,
            )
            for spec in specs
        )
    frames_per_batch = config.frames_per_batch or DEFAULT_FRAMES_PER_BATCH  # records: no CNN
    if specs:
        frames_per_batch = resolve_frames_per_batch(
            config.frames_per_batch, specs[0], config.beam_args
        )
    fps = tagging_plan.features_fps(models, tagging_inputs, config.input)
    run_id = new_run_id()
    with lease.acquire(config.output, PROG, config.lease_timeout_s, config.break_lease, run_id):
        tagging_outputs.prepare_output(config.output, config.overwrite, keep=(lease.LEASE_FILE,))
        staging = tagging_outputs.staging_dir(config.output, run_id)
        settings = _settings(config, models, fps, staging)
        summary = {"run_id": run_id, "model": config.model, "input": config.input}
        if config.extra_models:  # one model's tagging.json stays as it was
            summary.update(models=list(config.models), ensemble_weights=list(models.weights))
        summary.update(input_kind=tagging_inputs.kind, fps=fps, top_k=config.top_k)
        summary.update(min_score=config.min_score, segment_seconds=config.segment_seconds)
        summary["smooth"] = config.smooth
        if specs:  # raw videos: decoded as the model's features were
            summary.update(decode=specs[0].decode, decode_device=config.decode_device)
            summary["precision"] = config.precision
        tagging_steps.run_job(
            pipeline or _pipeline(config.beam_args),
            tagging_steps.TaggingJob(settings, tagging_inputs, specs, summary),
            frames_per_batch,
            faults,
        )
        if faults is not None and faults.fail_before_commit:
            raise RuntimeError("FaultPlan.fail_before_commit: failing before the commit")
        report.write_report(staging, shown_as=config.output)
        written = storage.read_text(storage.join(staging, tagging_outputs.SUMMARY_FILE))
        tagging_outputs.commit(staging, config.output)
    return json.loads(written)


def _settings(config: TagConfig, models, fps: float, staging: str):  # -> TagSettings
    from pipelines import tagging_steps

    scoring = tuple(
        tagging_steps.ScoringModel(model.url, model.max_frames, weight)
        for model, weight in zip(models.models, models.weights, strict=True)
    )
    return tagging_steps.TagSettings(
        models=scoring,
        staging=staging,
        feature_names=models.feature_names,
        feature_sizes=models.feature_sizes,
        fps=fps,
        top_k=config.top_k,
        min_score=config.min_score,
        segment_seconds=config.segment_seconds,
        smooth=config.smooth,
        label_names=models.label_names,
    )


def _pipeline(beam_args: tuple[str, ...]):  # -> beam.Pipeline
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    return beam.Pipeline(options=PipelineOptions(list(beam_args)))


def print_summary(summary: dict, config: TagConfig) -> int:
    """The run's outcome in a few lines; a --min_score that left no tag is an error."""
    counts = summary["counts"]
    tagged, below, failed = counts["tagged"], counts.get("below_min_score", 0), counts["failed"]
    predictions = storage.join(config.output, "predictions.csv")
    if below and not tagged:
        raise UsageError(
            f"no tag reached it: the best score over {below} videos is {summary['top_score']:.4g}",
            f"--min_score {config.min_score:g}",
            f"lower it; every video's scores are in {predictions}",
        )
    scored = f" ({below} with no score >= --min_score {config.min_score:g})" if below else ""
    print(f"{PROG}: {tagged} of {counts['seen']} videos tagged{scored}, {failed} failed")
    print(f"  tags:        {storage.join(config.output, 'tags.csv')} (and .parquet)")
    print(f"  segments:    {storage.join(config.output, 'segments.parquet')}")
    print(f"  predictions: {predictions}")
    print(f"  report:      {storage.join(config.output, 'report', 'index.html')}")
    if failed:
        dead_letter = f"failed-{summary['run_id']}.jsonl"
        print(f"  failed:      {storage.join(config.output, dead_letter)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse(argv)
    cli.quiet(args.verbose, PROG)

    def tag() -> int:
        config = config_from_flags(args, beam_args)
        return print_summary(run(config), config)

    return cli.run_main(
        PROG,
        tag,
        args.verbose,
        after_failure=lambda: "nothing was committed; rerun to tag again",
    )


if __name__ == "__main__":
    sys.exit(main())
