"""Running `xlmr` in this process and reading its one-line errors."""

from __future__ import annotations

from modeling_xlmr import cli


def run_xlmr(capsys, *arguments) -> tuple[int, str]:
    """`xlmr ARGUMENTS` in this process: (exit status, standard error)."""
    status = cli.main([str(argument) for argument in arguments])
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, stderr: str, *fragments: str, command: str = "convert") -> str:
    """Exit status 2, no traceback, exactly one `xlmr COMMAND: error:` line holding every fragment."""
    errors = [line for line in stderr.splitlines() if line.startswith(f"xlmr {command}: error:")]
    assert status == 2, stderr
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_nothing_written(directory, *kept):
    assert sorted(path.name for path in directory.iterdir()) == sorted(kept)
