"""`xlmr export-onnx`: an XLM-R repo as an ONNX graph (fp32, optionally int8), verified against PyTorch."""

from __future__ import annotations

import argparse
import sys


def add_subcommands(subparsers) -> None:
    export = subparsers.add_parser(
        "export-onnx",
        help="export a repo to ONNX (dynamic batch and sequence axes), optionally quantized to int8",
        description=(
            "Export REPO to ONNX: a sequence classifier's logits, else the encoder's last_hidden_state, with dynamic "
            "batch and sequence axes; with --quantize int8 also model_quantized.onnx (onnxruntime dynamic "
            "quantization). Each graph is checked in onnxruntime against PyTorch before OUT is written."
        ),
    )
    export.add_argument("repo", metavar="REPO", help="converted or stock XLM-R repo: local directory or Hub id")
    export.add_argument("output", metavar="OUT", help="directory to create (must not exist unless --overwrite)")
    export.add_argument("--quantize", choices=("int8",), help="also write an int8 model_quantized.onnx")
    export.add_argument("--overwrite", action="store_true", help="replace an OUT that holds only a previous export")
    export.add_argument(
        "--trust-remote-code", action="store_true", help="let a repo's own tokenizer code run (never needed here)"
    )
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from transformers.utils import logging

    from conversion.onnx_export import export_onnx

    logging.disable_progress_bar()

    result = export_onnx(
        args.repo,
        args.output,
        quantize=args.quantize,
        overwrite=args.overwrite,
        trust_remote_code=args.trust_remote_code,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(result.output)
    return 0


__all__ = ["add_subcommands"]
