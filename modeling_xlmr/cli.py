"""The `xlmr` command line: one sub-command per job, each defined next to the code it drives.

Every module in `SUBCOMMAND_MODULES` exposes `add_subcommands(subparsers)`; each parser it adds sets
`func(args) -> int | None`. A user error (bad input, missing file, bad option) is raised as
`CLIError` or a standard `ValueError`/`OSError` and printed as one line, never a traceback
(set XLMR_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

SUBCOMMAND_MODULES = (
    "conversion.cli",  # convert, push
    "modeling_xlmr.finetune",  # finetune, evaluate
    "modeling_xlmr.batch_cli",  # extract, classify
    "modeling_xlmr.demo",  # demo
)


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlmr", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a real missing dependency, not a missing sub-command
                raise
            continue
        module.add_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print(f"xlmr {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as error:
        if os.environ.get("XLMR_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"xlmr {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    # `python -m modeling_xlmr.cli` (e.g. under `accelerate launch`): run the package's copy of this
    # module, whose CLIError is the one sub-commands raise, not this `__main__` duplicate.
    from modeling_xlmr.cli import main as package_main

    sys.exit(package_main())
