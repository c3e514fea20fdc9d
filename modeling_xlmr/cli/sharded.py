"""`xlmr extract` / `xlmr classify` into a directory of parquet shards: streaming, resumable, on one
machine or on Ray.

    xlmr extract --model M --input 'corpus/*.jsonl' --output vectors/ --shard-size 100000
    xlmr extract --model M --input corpus.txt --output vectors/ --engine ray --address auto --num-actors 8

An `--output` that is a directory (an existing one, or a path ending in "/") selects this path; the
rows, manifest and resume rules are `modeling_xlmr.inference.shards`'s. `extract.py` owns the options
both paths share and the model loading; this module adds the sharding options and runs the job.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

from ..common.dependencies import require
from ..common.dtypes import parse_dtype, short_name
from ..inference import records, shards, sources, streaming

ENGINES = ("local", "ray")


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    group = parser.add_argument_group("directory output (parquet shards, resumable)")
    group.add_argument("--shard-size", type=int, default=streaming.DEFAULT_SHARD_SIZE, help="rows per shard")
    group.add_argument(
        "--block-size",
        type=int,
        default=streaming.DEFAULT_BLOCK_ROWS,
        help="texts read and sorted by length at a time (memory is bounded by it; default: %(default)s)",
    )
    group.add_argument("--overwrite", action="store_true", help="start over an output written with other settings")
    group.add_argument("--engine", choices=ENGINES, default="local", help="local: this process; ray: Ray Data")
    group.add_argument(
        "--address",
        help="Ray cluster: auto (the one `ray start` began), HOST:PORT, or local (default: a Ray of this machine)",
    )
    group.add_argument("--num-actors", type=int, default=1, help="Ray actors, each holding a model (default: 1)")
    group.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs per Ray actor (its torch threads)")
    group.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs per Ray actor")
    if command == "extract":
        group.add_argument(
            "--output-dtype", choices=shards.VECTOR_DTYPES, default="float32", help="vector type in the shards"
        )


def wanted(args: argparse.Namespace) -> bool:
    """Whether this run writes shards; refuses what only the sharded path can do, asked of the other."""
    if shards.is_directory_output(args.output):
        return True
    if args.engine == "ray":
        raise records.RecordsError(f"--engine ray writes a directory of shards; end --output with / ({args.output}/).")
    fmt = args.input_format or sources.SUFFIX_FORMATS.get(os.path.splitext(args.input)[1].lower(), "txt")
    several = os.path.isdir(args.input) or not os.path.exists(args.input) and glob.has_magic(args.input)
    if fmt not in records.INPUT_FORMATS or several:
        raise records.RecordsError(
            f"{args.input} ({fmt}, or several files) is read by the sharded writer: pass a directory as --output "
            "(ending in /), or a single .txt/.jsonl input."
        )
    if getattr(args, "output_dtype", "float32") != "float32":
        raise records.RecordsError("--output-dtype float16 applies to a directory output (ending in /).")
    return False


def check_options(args: argparse.Namespace) -> None:
    for name in ("shard_size", "block_size", "num_actors", "max_tokens_per_batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    parse_dtype(args.dtype)


def run(args: argparse.Namespace, load, choose_head) -> int:
    """`load(args) -> (process state, repo)` and `choose_head(repo, name) -> (head, labels)` are
    extract.py's (one home for loading a model from the command line)."""
    check_options(args)
    if args.engine == "ray":
        require("ray")  # before reading anything: the missing extra is the first thing to say
    source = sources.TextInput(args.input, args.input_format, args.field, args.id_field)
    if args.engine == "ray":
        return _run_ray(args, source)
    plan = None if source.is_stdin else source.scan(args.shard_size)  # bad input fails before the model loads
    state, repo = load(args)
    if state.num_processes > 1:
        raise ValueError("a directory output runs in one process; to spread the work, use --engine ray.")
    from ..inference.engine import InferenceEngine

    engine = InferenceEngine(repo.model, repo.tokenizer)
    if args.command == "extract":
        predictor = streaming.Embedder(engine, vector_dtype=args.output_dtype, **_embed_options(args))
    else:
        head, labels = choose_head(repo, args.head)
        predictor = streaming.Classifier(engine, head, labels, args.head, args.long_text, args.max_tokens_per_batch)
    settings = model_settings(args, short_name(repo.model.dtype))
    summary = streaming.extract_to_directory(
        predictor, source, args.output, settings, args.shard_size, args.block_size, args.overwrite,
        progress=not args.no_progress, plan=plan,
    )  # fmt: skip
    _report(args, summary)
    return 0


def _run_ray(args: argparse.Namespace, source: sources.TextInput) -> int:
    from ..ray_data.sharded import extract_with_ray

    predictor = {"model": model_name(args.model), "task": "embed" if args.command == "extract" else "classify"}
    predictor.update(revision=args.revision, dtype=args.dtype, max_tokens_per_batch=args.max_tokens_per_batch)
    if args.command == "extract":
        predictor.update(vector_dtype=args.output_dtype, **_embed_options(args))
    else:
        predictor.update(head=args.head, long_text=args.long_text)
    summary = extract_with_ray(
        predictor, source, args.output, model_settings(args, _saved_dtype(args)), args.shard_size,
        concurrency=args.num_actors, num_cpus=args.cpus_per_actor, num_gpus=args.gpus_per_actor,
        address=None if args.address in (None, "local") else args.address, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    _report(args, summary)
    return 0


def _embed_options(args: argparse.Namespace) -> dict:
    """The embedding options given, else the repo's sentence-transformers settings (read without the model)."""
    from ..hub.sentence_settings import SentenceSettings, read_sentence_settings
    from .extract import embedding_options

    settings = read_sentence_settings(model_name(args.model), args.revision) or SentenceSettings()
    return {**embedding_options(args, settings), "long_text": args.long_text}


def model_name(model: str) -> str:
    """A local model as an absolute path (Ray actors and reruns may start elsewhere), a Hub id as is."""
    path = os.path.expanduser(model)
    return os.path.abspath(path) if os.path.isdir(path) else model


def model_settings(args: argparse.Namespace, dtype: str) -> dict:
    """What identifies the model in a sharded output's manifest."""
    return {"model": model_name(args.model), "revision": args.revision, "dtype": dtype}


def _saved_dtype(args: argparse.Namespace) -> str:
    """The dtype the actors will run in (--dtype, else as saved), without loading the weights here."""
    if args.dtype:
        return short_name(parse_dtype(args.dtype))
    from ..configuration_xlmr import XLMRConfig

    saved = getattr(XLMRConfig.from_pretrained(args.model, revision=args.revision), "dtype", None)
    return short_name(parse_dtype(str(saved))) if saved else "fp32"


def _report(args: argparse.Namespace, summary: dict) -> None:
    if not args.no_progress:
        print(
            f"xlmr {args.command}: {summary['rows']} rows in {summary['shards']} shards under {args.output} "
            f"({summary['computed']} computed now)",
            file=sys.stderr,
        )


__all__ = ["add_options", "run", "wanted"]
