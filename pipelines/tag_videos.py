"""`tag_videos`: tag a video library (raw videos or frame-level TFRecords) with a model.

    tag_videos --model model/ --input videos/ --output tags/ [--top_k 5] [Beam options]

Writes `<output>/tags.parquet` + `tags.csv` (id, path, rank, label_index, label_name, score),
`segments.parquet` (id, start_s, end_s, label_index, label_name, score), `predictions.csv`
(Kaggle VideoId,LabelConfidencePairs), `failed-<run_id>.jsonl`, `report/index.html` and,
last, `tagging.json`. Each appears whole or not at all; an output holding an earlier run's
files is refused unless --overwrite.
"""

import json
import secrets
import sys
import time
from dataclasses import dataclass

from features import cli, lease, storage
from features.cli import UsageError
from pipelines.config import FaultPlan

PROG = "tag_videos"
INPUT_KINDS = ("auto", "videos", "records")


@dataclass(frozen=True)
class TagConfig:
    """One run of `tag_videos`; `validate()` holds every rule, so a config a test builds is
    checked exactly as one parsed from flags."""

    model: str  # as given, made absolute: tagging.json records it
    input: str
    output: str
    input_kind: str = "auto"
    top_k: int = 5
    min_score: float = 0.0
    segment_seconds: float = 5.0
    smooth: int = 3
    frames_per_batch: int = 32
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
            ("--frames_per_batch", self.frames_per_batch, self.frames_per_batch >= 1, ">= 1"),
            ("--lease_timeout", self.lease_timeout_s, 0 < self.lease_timeout_s < finite, "> 0"),
        ]
        for flag, value, holds, wanted in rules:
            if not holds:
                raise UsageError("out of range", f"{flag} {value}", f"pass {wanted}")
        if self.output.rstrip("/") in (self.model.rstrip("/"), self.input.rstrip("/")):
            raise UsageError(
                "is also --model or --input", f"--output {self.output}", "write to a new folder"
            )
        return self


def build_parser() -> cli.Parser:
    from pipelines.beam_options import beam_option_names

    parser = cli.Parser(
        PROG,
        __doc__.split("\n\n")[0],
        passthrough=beam_option_names,
        epilog="Beam's own flags (e.g. --runner, --direct_num_workers) are passed to Beam.",
    )
    parser.add_argument("--model", required=True, help="a train_pool model directory")
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
    parser.add_argument(
        "--frames_per_batch", type=cli.int_at_least(1), default=32, help="frames per CNN batch"
    )
    parser.add_alias("--batch_size", "--frames_per_batch")
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
    return TagConfig(
        model=storage.absolute(args.model),
        input=storage.absolute(args.input),
        output=storage.absolute(args.output),
        input_kind=args.input_kind,
        top_k=args.top_k,
        min_score=args.min_score,
        segment_seconds=args.segment_seconds,
        smooth=args.smooth,
        frames_per_batch=args.frames_per_batch,
        overwrite=args.overwrite,
        lease_timeout_s=args.lease_timeout,
        break_lease=args.break_lease,
        beam_args=tuple(beam_args),
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
    model = tagging_plan.load_model(config.model)
    tagging_inputs = tagging_plan.find_inputs(config.input, config.input_kind, model.feature_names)
    if tagging_inputs.kind == "videos" and model.no_videos_reason:
        fix = "tag its frame-level records instead, or retrain on features with a manifest"
        raise UsageError(
            f"cannot tag raw videos: {model.no_videos_reason}", f"--model {config.model}", fix
        )
    if tagging_inputs.kind == "videos":
        tagging_plan.check_video_model(model)
    fps = tagging_plan.features_fps(model, tagging_inputs, config.input)
    run_id = new_run_id()
    with lease.acquire(config.output, PROG, config.lease_timeout_s, config.break_lease, run_id):
        tagging_outputs.prepare_output(config.output, config.overwrite, keep=(lease.LEASE_FILE,))
        staging = tagging_outputs.staging_dir(config.output, run_id)
        settings = _settings(config, model, fps, staging)
        summary = {"run_id": run_id, "model": config.model, "input": config.input}
        summary.update(input_kind=tagging_inputs.kind, fps=fps, top_k=config.top_k)
        summary.update(min_score=config.min_score, segment_seconds=config.segment_seconds)
        summary["smooth"] = config.smooth
        tagging_steps.run_job(
            pipeline or _pipeline(config.beam_args),
            tagging_steps.TaggingJob(settings, tagging_inputs, model.specs, summary),
            config.frames_per_batch,
            faults,
        )
        if faults is not None and faults.fail_before_commit:
            raise RuntimeError("FaultPlan.fail_before_commit: failing before the commit")
        report.write_report(staging, shown_as=config.output)
        written = storage.read_text(storage.join(staging, tagging_outputs.SUMMARY_FILE))
        tagging_outputs.commit(staging, config.output)
    return json.loads(written)


def _settings(config: TagConfig, model, fps: float, staging: str):  # -> TagSettings
    from pipelines import tagging_steps

    return tagging_steps.TagSettings(
        model_url=config.model,
        staging=staging,
        feature_names=model.feature_names,
        feature_sizes=model.feature_sizes,
        fps=fps,
        max_frames=model.max_frames,
        top_k=config.top_k,
        min_score=config.min_score,
        segment_seconds=config.segment_seconds,
        smooth=config.smooth,
        label_names=model.label_names,
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
