"""`xlmr extract` and `xlmr classify`: batch inference over a file of texts.

    xlmr extract --model DIR_OR_HUB_ID --input texts.txt --output vectors.npy --pooling mean --dtype bf16
    xlmr classify --model DIR_OR_HUB_ID --input docs.jsonl --field body --output labels.jsonl
    xlmr classify --task ner --model NER_MODEL --input texts.txt --output entities.jsonl
    accelerate launch --multi_gpu --num_processes 2 -m modeling_xlmr.cli extract --model M --input big.txt --output big.npy

Under `accelerate launch` each process takes a contiguous slice of the input (Accelerate's
`split_between_processes`), results are gathered in process order and the main process writes
the one output, so the rows are in input order whatever the number of processes. On a machine
without GPUs the same `--multi_gpu` (torchrun) launch gives CPU processes joined over gloo;
accelerate's own `--cpu` flag starts a single process unless an MPI hostfile is configured
(huggingface/accelerate#2741).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..common.dtypes import parse_dtype
from ..inference import batching, records, sources
from . import sharded


def add_subcommands(subparsers) -> None:
    extract = subparsers.add_parser(
        "extract",
        help="one embedding per input text (.npy, .safetensors or .jsonl)",
        description="Embed every text of --input with an XLM-R model and write one vector per text, in input order.",
    )
    _add_common_options(
        extract, output_help="output: .npy, .safetensors (key 'embeddings'), .jsonl, or a directory/ of parquet shards"
    )
    extract.add_argument(
        "--pooling",
        choices=batching.POOLINGS,
        help="<s> state or mean of tokens (default: the repo's sentence-transformers pooling, else cls)",
    )
    extract.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        help="L2-normalize each vector (default: as the repo's sentence-transformers settings say, else no)",
    )
    extract.add_argument("--prompt", help="text put before every input, e.g. 'query: ' for multilingual-e5")
    extract.add_argument("--prompt-name", help="one of the repo's sentence-transformers prompts, e.g. query")
    extract.add_argument(
        "--long-text",
        choices=batching.LONG_TEXT_POLICIES,
        default="error",
        help="texts over 512 tokens: fail, keep the first 510 tokens, or pool overlapping windows",
    )
    sharded.add_options(extract, "extract")
    extract.set_defaults(func=run_extract)

    classify = subparsers.add_parser(
        "classify",
        help="label every input text (.jsonl): sequence classification, or named entities with --task ner",
        description="Classify every text of --input; writes {label, score, probabilities} per line, in input order. "
        "With --task ner: {text, words, tags (one per word), entities (type, text, start, end)} per line.",
    )
    _add_common_options(classify, output_help="output: a .jsonl file, or a directory/ of parquet shards")
    classify.add_argument(
        "--task", choices=("sequence", "ner"), default="sequence", help="one label per text, or one tag per word"
    )
    classify.add_argument("--head", help="classification head name (default: the model's own classifier)")
    classify.add_argument(
        "--long-text",
        choices=("error", "truncate", "chunk"),
        help="texts over the model's length: fail, keep the first tokens (sequence), or tag window by window "
        "(ner); default: error for sequence, chunk for ner",
    )
    classify.add_argument("--tokens-field", default="tokens", help="ner: .jsonl field holding a list of words")
    classify.add_argument("--max-length", type=int, help="ner: tokens per window (default: the model's maximum)")
    classify.add_argument("--stride", type=int, default=128, help="ner: pieces consecutive windows share")
    sharded.add_options(classify, "classify")
    classify.set_defaults(func=run_classify)


def _add_common_options(parser: argparse.ArgumentParser, output_help: str) -> None:
    parser.add_argument("--model", required=True, help="converted or stock XLM-R repo: local directory or Hub id")
    parser.add_argument(
        "--input",
        required=True,
        help="texts: .txt (one per line), .jsonl, .csv, .tsv, .parquet, a glob or directory of them, or - (stdin)",
    )
    parser.add_argument("--output", required=True, help=output_help)
    parser.add_argument("--input-format", choices=sources.FORMATS, help="default: from the input's suffix")
    parser.add_argument("--field", default="text", help="text field or column (default: text)")
    parser.add_argument("--id-field", default="id", help="id field or column copied to the output (default: id)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a repo's own tokenizer code run (never needed for this package's repos or stock XLM-R)",
    )
    parser.add_argument(
        "--device",
        help="cpu, cuda, cuda:1, ... or auto (spread over GPUs by Accelerate); default: this process's device",
    )
    parser.add_argument(
        "--dtype",
        help="fp32, fp16, bf16, or int8: fp32 weights, encoder projections as int8 GEMMs on CPU (default: as saved)",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        type=int,
        default=batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        help="padded tokens per forward pass (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run_extract(args: argparse.Namespace) -> int:
    if sharded.wanted(args):
        return sharded.run(args, _load_for, _head)
    suffix = records.check_output(args.output, records.EMBEDDING_OUTPUTS)
    inputs, state, repo = _prepare(args)
    engine = _engine(repo)
    options = embedding_options(args, repo.sentence_settings)

    def embed(texts: list[str]) -> np.ndarray:
        return engine.embed(
            texts,
            **options,
            max_tokens_per_batch=args.max_tokens_per_batch,
            long_text=args.long_text,
            progress=_show_progress(args, state),
        ).numpy()

    parts = _run_in_slices(args, state, inputs.texts, embed)
    if state.is_main_process:
        ids = inputs.ids if suffix == ".jsonl" else None
        records.write_embeddings(args.output, np.concatenate(parts, axis=0), ids, inputs.id_field)
    return 0


def run_classify(args: argparse.Namespace) -> int:
    if args.task == "ner":
        if sharded.wanted(args):
            raise ValueError("--task ner writes a .jsonl file (one row per input); a directory output is for labels.")
        records.check_output(args.output, (".jsonl",))
        return _run_classify_ner(args)
    if args.long_text == "chunk":
        raise ValueError("--long-text chunk tags words window by window: it is for --task ner.")
    args.long_text = args.long_text or "error"
    if sharded.wanted(args):
        return sharded.run(args, _load_for, _head)
    records.check_output(args.output, (".jsonl",))
    inputs, state, repo = _prepare(args)
    engine = _engine(repo)
    head, labels = _head(repo, args.head)

    def classify(texts: list[str]) -> list[dict]:
        return engine.classify(
            texts,
            head,
            labels,
            max_tokens_per_batch=args.max_tokens_per_batch,
            long_text=args.long_text,
            progress=_show_progress(args, state),
        )

    parts = _run_in_slices(args, state, inputs.texts, classify)
    if state.is_main_process:
        results = [result for part in parts for result in part]
        records.write_classifications(args.output, results, inputs.ids, inputs.id_field)
    return 0


def _run_classify_ner(args: argparse.Namespace) -> int:
    from ..ner.prediction import NERPredictor, load_ner_model, read_ner_inputs, write_ner_predictions

    dtype = parse_dtype(args.dtype)
    fmt = records.input_format(args.input, args.input_format)
    inputs = read_ner_inputs(args.input, fmt, args.field, args.tokens_field, args.id_field)
    _check_device(args.device)
    state = _process_state(args.device)
    try:
        model, tokenizer = load_ner_model(
            args.model, args.device or state.device, dtype, args.revision, args.trust_remote_code
        )
    except OSError as error:
        raise OSError(
            f"cannot load model: {str(error).strip().splitlines()[0] if str(error).strip() else error}"
        ) from error
    predictor = NERPredictor(
        model, tokenizer, args.max_length, args.stride, args.max_tokens_per_batch, args.long_text or "chunk"
    )
    parts = _run_in_slices(args, state, inputs.items, predictor.predict)
    if state.is_main_process:
        rows = [row for part in parts for row in part]
        write_ner_predictions(args.output, rows, inputs.ids, inputs.id_field)
    return 0


def _run_in_slices(args: argparse.Namespace, state, texts: list[str], compute) -> list:
    """`compute` on this process's contiguous slice of `texts`; every process's result, in process
    (hence input) order. An error in one process is raised in all of them, so that none waits
    forever in the gather for a peer that gave up."""
    with state.split_between_processes(texts) as share:
        if state.num_processes == 1:
            return [compute(share)]
        start = _announce_share(args, state, len(texts), len(share))
        failure = None
        try:
            outcome = (compute(share), None)
        except batching.TextTooLongError as error:  # number the text as in the whole input
            failure = error.shifted(start)
            outcome = (None, str(failure))
        except Exception as error:  # reported to every process below
            failure = error
            outcome = (None, f"process {state.process_index}: {' '.join(str(error).split()) or type(error).__name__}")
    from accelerate.utils import gather_object

    outcomes = gather_object([outcome])
    if failure is not None and not isinstance(failure, (ValueError, OSError)):
        raise failure  # a bug, not a user error: keep its traceback here
    messages = [message for _, message in outcomes if message is not None]
    if messages and not state.is_main_process:
        raise SystemExit(2)  # the main process reports it, once
    if messages:
        raise ValueError("; ".join(messages))
    return [result for result, _ in outcomes]


def _prepare(args: argparse.Namespace):
    """Check every option and read the input before paying for the model."""
    parse_dtype(args.dtype)  # an unknown name fails before the input is read
    if args.max_tokens_per_batch < 1:
        raise ValueError(f"--max-tokens-per-batch must be positive, got {args.max_tokens_per_batch}.")
    inputs = records.read_records(
        args.input, records.input_format(args.input, args.input_format), args.field, args.id_field
    )
    return (inputs, *_load_for(args))


def _load_for(args: argparse.Namespace):
    """(this process's Accelerate state, the repo as --model/--revision/--dtype/--device say)."""
    _check_device(args.device)
    state = _process_state(args.device)
    device_map = args.device or state.device
    dtype = parse_dtype(args.dtype)
    _check_int8(dtype, device_map)
    return state, _load(args.model, device_map, dtype, args.revision, args.trust_remote_code)


def embedding_options(args: argparse.Namespace, settings) -> dict:
    """Pooling, normalisation, prompt and length limit: the options given, else the repo's sentence settings."""
    return {
        "pooling": settings.pooling if args.pooling is None else args.pooling,
        "normalize": settings.normalize if args.normalize is None else args.normalize,
        "prompt": settings.prompt(args.prompt, args.prompt_name),
        "max_length": settings.max_length,
    }


def _check_device(device: str | None) -> None:
    """A device that does not exist here is the user's mistake: say so before loading anything."""
    import torch

    if device in (None, "auto", "cpu"):
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device} is not a device name; use cpu, cuda, cuda:1, ... or auto.") from None
    backend = getattr(torch, parsed.type, None)
    available = backend is not None and hasattr(backend, "is_available") and backend.is_available()
    if not available:
        raise ValueError(
            f"--device {device}: this machine has no {parsed.type} device ({parsed.type} is not available to "
            "torch); use --device cpu, or leave --device out to use what this process has."
        )
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f"--device {device}: only {count} {parsed.type} device(s) here (0..{count - 1}).")


def _check_int8(dtype, device_map) -> None:
    """int8 inference where it cannot run is the user's mistake: say so before loading anything."""
    import torch

    from ..quantization import int8_unavailable_reason

    if dtype != torch.int8 or device_map == "auto":  # "auto" is checked once the model is placed
        return
    reason = int8_unavailable_reason(device_map)
    if reason is not None:
        raise ValueError(f"--dtype int8: {reason}.")


def _process_state(device: str | None):
    """Accelerate's view of this process. Processes spawned by torchrun-style launchers only form a
    CPU process group (gloo) when told `cpu=True`, so that is set for CPU runs."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    cpu = device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator
    return PartialState(cpu=cpu)


def _load(model: str, device_map, dtype, revision: str | None, trust_remote_code: bool = False):
    from transformers.utils import logging

    from ..hub.loading import load_repo

    logging.disable_progress_bar()  # our own bar is the one that matters; keep stderr readable
    try:
        return load_repo(
            model, device_map=device_map, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(f"cannot load model: {reason}") from error


def _engine(repo):
    from ..inference.engine import InferenceEngine

    return InferenceEngine(repo.model, repo.tokenizer)


def _head(repo, name: str | None):
    """The head to classify with (default: the model's own classifier, or the only head) and its labels."""
    from ..hub.heads import default_head, label_names

    heads = {head_name: head for head_name, (head, _) in repo.heads.items()}
    if name is None:
        name = default_head(heads, getattr(repo.model, "classifier", None))
    if name not in heads:
        known = ", ".join(map(repr, heads)) or "none"
        raise ValueError(f"no classification head named {name!r} (heads: {known}); choose one with --head.")
    return heads[name], label_names(heads[name], repo.heads[name][1])


def _announce_share(args: argparse.Namespace, state, total: int, count: int) -> int:
    """Say on stderr which slice of the input this process takes; returns the slice's first index.
    (Accelerate gives the first `total % processes` processes one text more.)"""
    per_process, extra = divmod(total, state.num_processes)
    start = state.process_index * per_process + min(state.process_index, extra)
    print(
        f"xlmr {args.command}: process {state.process_index}/{state.num_processes} takes texts "
        f"{start}..{start + count - 1} of {total}",
        file=sys.stderr,
        flush=True,
    )
    return start


def _show_progress(args: argparse.Namespace, state) -> bool:
    return not args.no_progress and state.is_main_process


__all__ = ["add_subcommands", "run_extract", "run_classify"]
