"""The `xlmr` command line: one module per sub-command, each turning options into a library call.

Every sub-command module exposes `add_subcommands(subparsers)`; each parser it adds sets
`func(args) -> int | None`. The library below raises `ValueError` / `OSError` for anything the user
can fix (bad input, missing file, bad option) and `MissingDependencyError` for a missing extra; this
module alone prints them as one line with exit status 2. Anything else is a bug of ours: one line too,
exit status 1. Never a traceback, unless XLMR_DEBUG=1 asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..common.dependencies import MissingDependencyError
from . import convert, demo, export, extract, finetune

SUBCOMMANDS = (convert, export, finetune, extract, demo)
DESCRIPTION = "XLM-RoBERTa on Hugging Face Transformers: convert fairseq checkpoints, embed, classify, fine-tune."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlmr", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print(f"xlmr {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, MissingDependencyError) as error:
        if os.environ.get("XLMR_DEBUG"):
            raise
        print(f"xlmr {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if os.environ.get("XLMR_DEBUG"):
            raise
        print(
            f"xlmr {args.command}: internal error: {type(error).__name__}: {one_line(error)} "
            "(please report it; XLMR_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(status or 0)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


__all__ = ["build_parser", "main", "one_line"]
