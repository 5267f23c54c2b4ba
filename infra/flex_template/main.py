"""Flex Template entry point: submits one `extract_features` job to Dataflow, then returns.

The Flex Template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE in infra/Dockerfile)
and passes each template parameter as `--name=value`. Dataflow's rule for launchers is to return
once the job is submitted. This file therefore calls `run`, not the console script's `main`:
`main` waits for the job to finish and then prints a summary.
"""

import argparse
import logging
import sys

from features import storage
from features.cli import UsageError, quiet, run_main
from features.formats import PCA_FILE
from pipelines import extract_features
from pipelines.config import ExtractConfig

PROG = "extract_features (flex template)"
TRUE_VALUES = ("true", "1", "yes")
FALSE_VALUES = ("false", "0", "no", "")


def switches_from_parameters(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Turns `--skip_existing=true` into `--skip_existing` and drops `--skip_existing=false`.

    Template parameters always carry a value, and argparse rejects a value given to an on/off
    flag. Every flag that takes no value is treated this way."""
    # argparse has no public list of a parser's flags.
    switches = {
        option
        for action in parser._actions
        if action.nargs == 0
        for option in action.option_strings
    }
    converted = []
    for arg in argv:
        name, has_value, value = arg.partition("=")
        if not (has_value and name in switches):
            converted.append(arg)
        elif value.lower() in TRUE_VALUES:
            converted.append(name)
        elif value.lower() not in FALSE_VALUES:
            raise UsageError("expected true or false", f"{name}={value}", "pass true or false")
    return converted


def check_pca_ready(config: ExtractConfig) -> None:
    """A template launch submits one job. Fitting the PCA takes a job of its own, which must
    run and finish first, and a launcher that waited for it would block."""
    output_pca = storage.join(config.output, PCA_FILE)
    pca = config.rgb.pca
    if pca == "fit" or (pca == "auto" and not storage.exists(output_pca)):
        raise UsageError(
            f"the template does not fit a PCA and {output_pca} does not exist",
            f"--pca {pca}",
            "fit one with infra/launch_dataflow.sh, copy a pca.npz there, or pass "
            "--pca gs://.../pca.npz",
        )


def submit(argv: list[str]) -> int:
    parser = extract_features.build_parser()
    args, beam_args = parser.parse(switches_from_parameters(argv, parser))
    config = extract_features.config_from_args(args, beam_args)
    check_pca_ready(config)
    extract_features.run(config, wait=False)  # the job releases the output's lease at commit
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet(verbose=False, prog=PROG)
    return run_main(PROG, lambda: submit(argv), verbose="--verbose" in argv)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)  # Beam logs the job id and console URL at INFO
    sys.exit(main())
