"""`xlmr convert` and `xlmr push`: the converter and the Hub upload on the command line."""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager

from conversion.checkpoint import CHECKPOINT_FILE

from ..common.dtypes import SHORT_NAMES


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",")]
    if not all(labels):
        raise argparse.ArgumentTypeError(f"empty label in {text!r}; give names like 'negative,positive'.")
    return labels


@contextmanager
def _interrupt_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt so the converter's cleanup runs and no partial output stays."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_convert(args: argparse.Namespace) -> int:
    from conversion.adopt import is_transformers_repo
    from conversion.hub import push_to_hub

    with _interrupt_on_sigterm():
        output = _adopt(args) if is_transformers_repo(args.source) else _convert_fairseq(args)
    print(output)
    if args.push_to_hub:
        return _push(output, args.push_to_hub, args, push_to_hub)
    return 0


def _convert_fairseq(args: argparse.Namespace):
    from conversion.convert import convert_fairseq_checkpoint

    if _sentence_settings(args) is not None or args.base_model:
        raise ValueError(
            "--pooling/--normalize/--prompt/--default-prompt/--max-seq-length/--base-model apply to a transformers "
            f"repo as SRC; {args.source} is a fairseq checkpoint."
        )
    return convert_fairseq_checkpoint(
        args.source,
        args.output,
        checkpoint_file=args.checkpoint_file,
        head=args.head,
        labels=args.labels,
        dtype=args.dtype,
        overwrite=args.overwrite,
        force=args.force,
        repo_id=args.push_to_hub,
        log=_stderr,
    ).output


def _adopt(args: argparse.Namespace):
    from conversion.adopt import adopt_transformers_repo

    if args.head or args.labels or args.dtype != "fp32" or args.checkpoint_file != CHECKPOINT_FILE:
        raise ValueError(
            f"{args.source} is a transformers repo: its weights are kept as they are, so --head, --labels, --dtype "
            "and --checkpoint-file do not apply."
        )
    return adopt_transformers_repo(
        args.source,
        args.output,
        sentence_settings=_sentence_settings(args),
        base_model=args.base_model,
        overwrite=args.overwrite,
        force=args.force,
        log=_stderr,
    ).output


def _sentence_settings(args: argparse.Namespace):
    """Sentence-transformers settings from the options, or None when none was given."""
    from modeling_xlmr.hub.sentence_settings import SentenceSettings

    given = [args.pooling, args.normalize, args.prompt, args.default_prompt, args.max_seq_length]
    if all(value is None or value == [] for value in given):
        return None
    prompts = {}
    for item in args.prompt or []:
        name, separator, text = item.partition("=")
        if not separator or not name:
            raise ValueError(f"--prompt {item!r} must be NAME=TEXT, e.g. --prompt 'query=query: '.")
        prompts[name] = text
    if args.default_prompt is not None and args.default_prompt not in prompts:
        raise ValueError(
            f"--default-prompt {args.default_prompt!r} is not one of the --prompt names ({', '.join(prompts) or 'none'})."
        )
    return SentenceSettings(
        pooling=args.pooling or "mean",
        normalize=bool(args.normalize),
        max_length=args.max_seq_length,
        prompts=prompts,
        default_prompt_name=args.default_prompt,
    )


def run_push(args: argparse.Namespace) -> int:
    from conversion.hub import push_to_hub

    return _push(args.folder, args.repo_id, args, push_to_hub)


def _push(folder, repo_id: str, args: argparse.Namespace, push_to_hub) -> int:
    url = push_to_hub(
        folder,
        repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        log=_stderr,
    )
    print(url)
    return 0


def _add_push_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("publishing (the token comes from `hf auth login` or HF_TOKEN)")
    group.add_argument("--private", action="store_true", help="create the repo as private if it does not exist")
    group.add_argument("--revision", help="branch to commit to (created if missing)")
    group.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    group.add_argument("--commit-message", help="commit message (default: names the converted folder)")


def add_subcommands(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert a fairseq XLM-R checkpoint to a verified safetensors repo",
        description=(
            "Convert a fairseq XLM-R model directory or released .tar.gz into a transformers repository "
            "(safetensors, tokenizer, remote code, model card), verified against the fairseq weights."
        ),
    )
    convert.add_argument(
        "source",
        metavar="SRC",
        help="fairseq model directory, xlmr.*.tar.gz archive, or a local transformers XLM-R repo (e5, bge-m3, ...)",
    )
    convert.add_argument("output", metavar="OUT", help="directory to create (must not exist unless --overwrite)")
    convert.add_argument("--checkpoint-file", default=CHECKPOINT_FILE, help="checkpoint inside SRC (default: model.pt)")
    convert.add_argument("--head", help="classification head stored as the sequence-classification head")
    convert.add_argument("--labels", type=_labels, help="comma-separated label names of --head, in class order")
    convert.add_argument("--dtype", choices=SHORT_NAMES, default="fp32", help="weights dtype (default fp32)")
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT that holds only a previous conversion's files (kept until the new one is complete)",
    )
    convert.add_argument(
        "--force", action="store_true", help="with --overwrite: OUT may hold other files too; they are kept"
    )
    convert.add_argument("--push-to-hub", metavar="REPO_ID", help="upload OUT to this Hub repo after converting")
    group = convert.add_argument_group(
        "transformers repos as SRC (weights kept as they are; sentence-transformers files kept, or written from these)"
    )
    group.add_argument("--pooling", choices=("cls", "mean"), help="sentence embedding pooling (default: mean)")
    group.add_argument("--normalize", action=argparse.BooleanOptionalAction, help="L2-normalize sentence embeddings")
    group.add_argument(
        "--prompt", action="append", metavar="NAME=TEXT", help="a named prompt, e.g. 'query=query: ' (repeatable)"
    )
    group.add_argument("--default-prompt", metavar="NAME", help="the prompt used when none is named")
    group.add_argument("--max-seq-length", type=int, help="tokens per text for sentence-transformers (default 512)")
    group.add_argument("--base-model", metavar="HUB_ID", help="the source's Hub id, named in the card's base_model")
    _add_push_options(convert)
    convert.set_defaults(func=run_convert)

    push = subparsers.add_parser(
        "push",
        help="upload a converted repo to the Hub in one commit",
        description="Upload OUT to the Hub in one commit.",
    )
    push.add_argument("folder", metavar="OUT", help="directory written by `xlmr convert`")
    push.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id, e.g. user/xlmr-base-v0")
    _add_push_options(push)
    push.set_defaults(func=run_push)
