"""Beam's own pipeline-option names, so the Beam jobs pass them through and refuse the rest."""

import argparse
import functools


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
