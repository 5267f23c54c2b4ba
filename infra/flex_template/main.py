"""Flex Template entry point: submits one `extract_features` job to Dataflow, then returns.

The Flex Template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE in infra/Dockerfile)
and passes each template parameter as `--name=value`. Dataflow's rule for launchers is to return
once the job is submitted. This file therefore calls `run`, not the console script's `main`:
`main` waits for the job to finish and then prints a summary.
"""

import argparse
import logging
import sys

from features.backbones import BackboneError
from features.formats import PCA_FILE
from features.labels import LabelError
from pipelines import storage
from pipelines.extract_features import UsageError, build_parser, run

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
            raise UsageError(f"{name}={value}: expected true or false")
    return converted


def check_pca_ready(argv: list[str]) -> None:
    """A template launch submits one job. Fitting the PCA takes a job of its own, which must
    run and finish first, and a launcher that waited for it would block."""
    args, _ = build_parser().parse_known_args(argv)
    output_pca = storage.join(storage.absolute(args.output), PCA_FILE)
    if args.pca == "fit" or (args.pca == "auto" and not storage.exists(output_pca)):
        raise UsageError(
            f"--pca {args.pca}: the template does not fit a PCA; {output_pca} must exist "
            "(fit one with infra/launch_dataflow.sh, or copy a pca.npz there) or pass "
            "--pca gs://.../pca.npz"
        )


def main(argv: list[str] | None = None) -> int:
    try:
        flags = switches_from_parameters(sys.argv[1:] if argv is None else argv, build_parser())
        check_pca_ready(flags)
        run(flags)
    except (UsageError, LabelError, BackboneError, FileNotFoundError) as error:
        print(f"extract_features (flex template): error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)  # Beam logs the job id and console URL at INFO
    sys.exit(main())
