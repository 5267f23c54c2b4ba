"""Beam's own pipeline options: their names, so the Beam jobs pass them through and refuse
the rest, and the values a command line gives them."""

import argparse
import functools
from collections.abc import Sequence


@functools.cache
def beam_option_names() -> frozenset[str]:
    """Every `--flag` a registered PipelineOptions class defines (Beam's and plugins')."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(allow_abbrev=False, conflict_handler="resolve")
    pending, seen = list(PipelineOptions.__subclasses__()), set()
    while pending:
        options_class = pending.pop()
        if options_class in seen:
            continue
        seen.add(options_class)
        pending.extend(options_class.__subclasses__())
        # The documented hook through which option classes declare their flags.
        options_class._add_argparse_args(parser)  # noqa: SLF001
    return frozenset(option for option in parser._option_string_actions if option.startswith("--"))


def passed_option(beam_args: Sequence[str], flag: str) -> str | None:
    """The value Beam's `flag` (e.g. "--runner") has in `beam_args`, None when not passed."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag)
    return getattr(parser.parse_known_args(list(beam_args))[0], flag[2:])


def runs_on_dataflow(beam_args: Sequence[str]) -> bool:
    """The job runs on Dataflow's workers, not on this machine."""
    return "dataflow" in (passed_option(beam_args, "--runner") or "").lower()
