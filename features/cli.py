"""What the five console scripts share: flag parsing, one-line errors and a quiet console.

Importing this module is cheap (standard library only), so `--help` answers before any
TensorFlow, Keras or Beam import: entry points parse first and import the heavy modules in
`run()`. Every user error ends as one line on stderr,

    <script>: error: <what> (<flag or path>): <how to fix>

and a non-zero exit, without a traceback (`--verbose` shows it).
"""

import argparse
import difflib
import errno
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence

USAGE_EXIT = 2
INTERRUPTED_EXIT = 130


class UsageError(Exception):
    """A flag, path or input the user must change; `str()` is the one-line message body."""

    def __init__(self, what: str, where: str, fix: str) -> None:
        super().__init__(what, where, fix)
        self.what, self.where, self.fix = what, where, fix

    def __str__(self) -> str:
        return f"{self.what} ({self.where}): {self.fix}"


class Parser(argparse.ArgumentParser):
    """argparse with defaults in `--help`, one-line errors, warned aliases and closest-flag
    suggestions for unknown flags.

    `passthrough` returns the option names another parser owns (Beam's pipeline options):
    those are handed back by `parse` instead of being refused.
    """

    def __init__(
        self,
        prog: str,
        description: str,
        passthrough: Callable[[], Iterable[str]] | None = None,
        epilog: str | None = None,
    ) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
            allow_abbrev=False,  # `--max` must not silently mean `--max_frames`
        )
        self._passthrough = passthrough
        self._aliases: dict[str, str] = {}
        self.add_argument(
            "--verbose",
            action="store_true",
            help="show library log lines and warnings, and tracebacks of errors",
        )

    def add_alias(self, old: str, new: str) -> None:
        """Accepts the deprecated spelling `old` for the flag `new`, with a warning."""
        self._aliases[old] = new
        action = self._option_string_actions[new]
        action.help = f"{action.help or ''} (formerly {old})".strip()

    def error(self, message: str) -> None:  # argparse's hook; must not return
        flag, _, detail = message.partition(": ")
        if message.startswith("argument ") and detail:
            where, what = flag.removeprefix("argument ").split("/")[0], detail
        elif message.startswith("the following arguments are required: "):
            where, what = message.split(": ", 1)[1], "missing required flag(s)"
        else:
            where, what = "flags", message
        fail(self.prog, UsageError(what, where, f"see `{self.prog} --help`"))

    def parse(self, argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
        """(our flags, the passthrough ones); any other unknown flag is a one-line error."""
        args = list(sys.argv[1:] if argv is None else argv)
        namespace, unknown = self.parse_known_args(self._replace_aliases(args))
        return namespace, self._check_unknown(unknown)

    def _replace_aliases(self, args: list[str]) -> list[str]:
        replaced = []
        for arg in args:
            name, equals, value = arg.partition("=")
            if name in self._aliases:
                new = self._aliases[name]
                warn(self.prog, f"{name} is deprecated; use {new}")
                arg = f"{new}{equals}{value}"
            replaced.append(arg)
        return replaced

    def _check_unknown(self, unknown: list[str]) -> list[str]:
        if not unknown:
            return []
        known_elsewhere = set(self._passthrough()) if self._passthrough else set()
        passed, after_flag = [], False
        for arg in unknown:
            name = arg.split("=", 1)[0]
            if name.startswith("-") and name in known_elsewhere:
                passed.append(arg)
                after_flag = "=" not in arg
            elif not name.startswith("-") and after_flag:
                passed.append(arg)  # the value of the passthrough flag before it
                after_flag = False
            else:
                fail(self.prog, self._unknown_flag_error(name))
        return passed

    def _unknown_flag_error(self, name: str) -> UsageError:
        if not name.startswith("-"):
            return UsageError("unexpected argument", name, f"see `{self.prog} --help`")
        ours = [option for option in self._option_string_actions if option.startswith("--")]
        normalised = "--" + name.lstrip("-").replace("-", "_")
        close = difflib.get_close_matches(normalised, ours, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]}?" if close else f"see `{self.prog} --help`"
        return UsageError("unrecognised flag", name, fix)


def fail(prog: str, error: UsageError) -> None:
    """Prints the one-line error and exits with the usage status."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


def warn(prog: str, message: str) -> None:
    print(f"{prog}: warning: {message}", file=sys.stderr)


def finite_float(
    low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (or (low, high] when low_open)."""
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        bounds = f"<= {high:g}"
    else:
        bounds = ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        below = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {bounds}".rstrip())
        return value

    parse.__name__ = "number"
    return parse


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is not an integer >= {low}")
        return value

    parse.__name__ = "integer"
    return parse


probability = finite_float(0.0, 1.0)
fraction_open = finite_float(0.0, 1.0, low_open=True)  # (0, 1]; callers refuse 1 if needed
positive_float = finite_float(0.0, low_open=True)


class _DropNoise(logging.Filter):
    """Log lines that say nothing to a user of these scripts."""

    NOISE = ("Resource module is not available",)

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(noise) for noise in self.NOISE)


def quiet(verbose: bool, prog: str = "") -> None:
    """Silences library chatter; call before TensorFlow or Beam is imported.

    TensorFlow's C++ log level is read once, when TensorFlow loads, hence the ordering.
    Our own warnings (printed by the scripts, or `warnings.warn` from framevlad modules)
    stay visible, as one `<prog>: warning: ...` line each instead of Python's two-line
    form with a source excerpt.
    """
    if verbose:
        return
    warnings.formatwarning = _one_line_warning(prog)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Beam's BatchElements fits batch-time models with np.polyfit on few points.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"apache_beam\.")
    warnings.filterwarnings("ignore", message=r".*RankWarning|Polyfit may be poorly")
    warnings.filterwarnings("ignore", message=r"Your input ran out of data")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger().addFilter(_DropNoise())
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Beam logs a failing step's exception with its traceback before re-raising it; the
    # script then reports the same error as one line.
    for name in ("apache_beam.runners.common", "apache_beam.runners.worker"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _one_line_warning(prog: str) -> Callable[..., str]:
    def format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
        return f"{prog or category.__name__}: warning: {message}\n"

    return format_warning


def run_main(
    prog: str,
    main_fn: Callable[[], int],
    verbose: bool,
    known_errors: tuple[type[Exception], ...] = (),
    after_failure: Callable[[], str] = lambda: "",
) -> int:
    """Runs a script body and turns every failure into one line and an exit status.

    `known_errors` are domain errors whose message already names the thing (e.g.
    LabelError); `after_failure` says what a failed run left behind, e.g. "nothing was
    committed; rerun to resume", and is added to I/O errors and interruptions.
    """
    try:
        return main_fn()
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        left = after_failure() or "rerun to start again"
        print(f"{prog}: error: interrupted (Ctrl-C): {left}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except OSError as error:
        if verbose:
            raise
        print(f"{prog}: error: {io_error_line(error, after_failure())}", file=sys.stderr)
    except known_errors as error:
        if verbose:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
    return USAGE_EXIT


_IO_FIXES = {
    errno.ENOSPC: "free space, then rerun",
    errno.EDQUOT: "free space or raise the quota, then rerun",
    errno.EROFS: "make it writable or choose another output, then rerun",
    errno.EACCES: "fix its permissions, then rerun",
    errno.EPERM: "fix its permissions, then rerun",
    errno.ENOENT: "check the path",
}


def io_error_line(error: OSError, left_behind: str) -> str:
    """`No space left on device (/out/x): free space, then rerun; nothing was committed`."""
    where = error.filename or "output"
    fix = _IO_FIXES.get(error.errno, "fix the cause, then rerun")
    line = f"{error.strerror or error} ({where}): {fix}"
    return f"{line}; {left_behind}" if left_behind else line
