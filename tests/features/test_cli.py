"""The shared CLI pieces: one-line errors, aliases, closest-flag suggestions, flag types."""

import errno

import pytest

from features import cli


def make_parser(passthrough=None) -> cli.Parser:
    parser = cli.Parser("tool", "A tool.", passthrough=passthrough)
    parser.add_argument("--max_frames", type=cli.int_at_least(0), default=300, help="frames")
    parser.add_argument("--fps", type=cli.positive_float, default=1.0, help="rate")
    parser.add_argument("--min_score", type=cli.probability, default=0.0)
    parser.add_argument("--frames_per_batch", type=cli.int_at_least(1), default=32, help="CNN")
    parser.add_argument("--input", required=True)
    parser.add_alias("--batch_size", "--frames_per_batch")
    return parser


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_help_shows_defaults_and_old_spellings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "(default: 300)" in out
    assert "(formerly --batch_size)" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--input", "x", "--fps", "nan"], "tool: error: nan is not a finite number > 0 (--fps)"),
        (["--input", "x", "--fps", "inf"], "tool: error: inf is not a finite number > 0 (--fps)"),
        (["--input", "x", "--min_score", "5"], "5 is not a finite number in [0, 1] (--min_score)"),
        (["--input", "x", "--max_frames", "-1"], "-1 is not an integer >= 0 (--max_frames)"),
        ([], "tool: error: missing required flag(s) (--input)"),
        (["--input", "x", "--max-frames", "3"], "(--max-frames): did you mean --max_frames?"),
        (["--input", "x", "--max_frame", "3"], "(--max_frame): did you mean --max_frames?"),
        (["--input", "x", "--zzz"], "unrecognised flag (--zzz): see `tool --help`"),
    ],
)  # fmt: skip
def test_errors_are_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse(argv)
    assert exit_info.value.code == cli.USAGE_EXIT
    assert expected in one_error_line(capsys)


def test_deprecated_alias_warns_and_sets_the_new_flag(capsys):
    args, rest = make_parser().parse(["--input", "x", "--batch_size=8"])
    assert args.frames_per_batch == 8 and rest == []
    assert "--batch_size is deprecated; use --frames_per_batch" in capsys.readouterr().err


def test_passthrough_flags_and_their_values_are_handed_back():
    parser = make_parser(passthrough=lambda: {"--runner", "--direct_num_workers"})
    argv = ["--input", "x", "--runner", "DirectRunner", "--direct_num_workers=2"]
    args, rest = parser.parse(argv)
    assert args.input == "x"
    assert rest == ["--runner", "DirectRunner", "--direct_num_workers=2"]


def test_stray_positional_is_refused(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse(["--input", "x", "stray"])
    assert "unexpected argument (stray)" in one_error_line(capsys)


def test_run_main_turns_failures_into_one_line(capsys):
    def usage() -> int:
        raise cli.UsageError("no videos matched", "--input /v", "check the folder")

    assert cli.run_main("tool", usage, verbose=False) == cli.USAGE_EXIT
    assert one_error_line(capsys) == (
        "tool: error: no videos matched (--input /v): check the folder"
    )

    def disk_full() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/out/pca.npz")

    status = cli.run_main(
        "tool", disk_full, verbose=False, after_failure=lambda: "nothing was committed"
    )
    assert status == cli.USAGE_EXIT
    assert one_error_line(capsys) == (
        "tool: error: No space left on device (/out/pca.npz): free space, then rerun; "
        "nothing was committed"
    )

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert cli.run_main("tool", interrupted, verbose=False) == cli.INTERRUPTED_EXIT
    assert "interrupted (Ctrl-C)" in one_error_line(capsys)


def test_known_domain_errors_are_one_line_and_verbose_keeps_the_traceback(capsys):
    def label_error() -> int:
        raise LookupError("labels.csv: label 'x' is not in the vocabulary")

    assert cli.run_main("tool", label_error, False, known_errors=(LookupError,)) == 2
    assert one_error_line(capsys).startswith("tool: error: labels.csv: label")
    with pytest.raises(LookupError):
        cli.run_main("tool", label_error, True, known_errors=(LookupError,))
