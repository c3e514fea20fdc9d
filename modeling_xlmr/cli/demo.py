"""`xlmr demo`: the whole pipeline, offline, on a tiny XLM-R made on the spot.

fairseq checkpoint -> `xlmr convert` -> `AutoModel.from_pretrained(..., trust_remote_code=True)` ->
features -> classification, printing each step. The same steps on the real weights are

    xlmr convert xlmr.base.v0.tar.gz xlmr-base-v0
    xlmr extract --model xlmr-base-v0 --input texts.txt --output vectors.npy
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SENTENCES = {
    "en": "the old man reads books in the library.",
    "fr": "le petit chat dort sur la chaise ce soir.",
    "de": "der alte Hund geht durch den grünen Wald.",
    "ru": "мы читаем новые книги вечером.",
    "zh": "我们 今天 在 公园 里 散步",
    "sw": "watoto wanacheza mpira uwanjani.",
}
HEAD_NAME = "xnli"
LABELS = ["entailment", "neutral", "contradiction"]
TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def add_subcommands(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run fairseq checkpoint -> conversion -> features -> classification on a tiny random model, offline",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--output-dir", help="keep the checkpoint and the converted repo here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and the tiny vocabulary")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.output_dir is not None:
        workdir = Path(args.output_dir)
        if workdir.exists() and any(workdir.iterdir()):
            raise OSError(f"--output-dir {workdir} is not empty; pass a new or empty directory.")
        workdir.mkdir(parents=True, exist_ok=True)
        return demo(workdir, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="xlmr-demo-"))
    try:
        return demo(workdir, args.seed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def demo(workdir: Path, seed: int = 0, out=None) -> int:
    """Run the pipeline in `workdir`, printing each step to `out` (default: standard output)."""

    def say(message: str = "") -> None:
        print(message, file=out or sys.stdout, flush=True)

    import torch
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.manual_seed(seed)

    fairseq_dir, repo_dir = workdir / "fairseq", workdir / "xlmr-tiny"
    say(
        f"[1/5] writing a tiny random fairseq XLM-R ({TINY_SIZES['num_hidden_layers']} layers, hidden "
        f"{TINY_SIZES['hidden_size']}, head {HEAD_NAME!r}) to {fairseq_dir}"
    )
    vocabulary = write_fairseq_checkpoint(fairseq_dir, seed)
    say(f"      model.pt + dict.txt + sentencepiece.bpe.model ({vocabulary} pieces, trained on the spot)")

    say(f"[2/5] converting it (`xlmr convert {fairseq_dir} {repo_dir} --head {HEAD_NAME}`)")
    from conversion import convert_fairseq_checkpoint

    convert_fairseq_checkpoint(
        fairseq_dir, repo_dir, head=HEAD_NAME, labels=LABELS, log=lambda line: say(f"      {line}")
    )
    say(f"      files: {', '.join(sorted(path.name for path in repo_dir.iterdir()))}")

    say("[3/5] loading it with AutoModel.from_pretrained(repo, trust_remote_code=True)")
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(repo_dir, trust_remote_code=True)
    model = AutoModel.from_pretrained(repo_dir, trust_remote_code=True).eval()
    say(
        f"      {type(model).__name__} from {type(model).__module__} (the repo's own code), "
        f"tokenizer {type(tokenizer).__name__}"
    )

    texts = list(SENTENCES.values())
    say(f"[4/5] extracting features for {len(texts)} sentences ({', '.join(SENTENCES)})")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        features = model(**batch).last_hidden_state
    say(f"      input_ids {tuple(batch['input_ids'].shape)} -> last_hidden_state {tuple(features.shape)}")
    for language, text, ids in zip(SENTENCES, texts, batch["input_ids"]):
        pieces = tokenizer.convert_ids_to_tokens(ids[ids.ne(tokenizer.pad_token_id)])
        say(
            f"      {language}: {text!r} -> {len(pieces)} tokens {' '.join(pieces[:8])}{' ...' if len(pieces) > 8 else ''}"
        )

    say(f"[5/5] classifying with AutoModelForSequenceClassification (the converted fairseq head {HEAD_NAME!r})")
    classifier = AutoModelForSequenceClassification.from_pretrained(repo_dir, trust_remote_code=True).eval()
    with torch.inference_mode():
        probabilities = classifier(**batch).logits.softmax(dim=-1)
    for language, row in zip(SENTENCES, probabilities):
        best = int(row.argmax())
        say(f"      {language}: {classifier.config.id2label[best]} ({float(row[best]):.3f})")

    say("      and with the fairseq-style interface (XLMRHubInterface):")
    from ..hub import XLMRHubInterface

    xlmr = XLMRHubInterface.from_pretrained(str(repo_dir)).eval()
    tokens = xlmr.encode(SENTENCES["en"], SENTENCES["fr"])
    say(f"      encode(en, fr) = {tokens.tolist()}")
    say(f"      decode(...) = {xlmr.decode(tokens)}")
    all_layers = xlmr.extract_features(tokens, return_all_hiddens=True)
    say(f"      extract_features(..., return_all_hiddens=True): {len(all_layers)} x {tuple(all_layers[-1].shape)}")
    say(
        f"      predict({HEAD_NAME!r}, ...).exp() = {[round(p, 3) for p in xlmr.predict(HEAD_NAME, tokens).exp()[0].tolist()]}"
    )
    embeddings = xlmr.embed(texts, pooling="mean", normalize=True)
    say(f"      embed(texts, pooling='mean', normalize=True) -> {tuple(embeddings.shape)}")
    say(
        "done. On real weights: xlmr convert xlmr.base.v0.tar.gz xlmr-base-v0 && "
        "xlmr extract --model xlmr-base-v0 --input texts.txt --output vectors.npy"
    )
    return 0


def write_fairseq_checkpoint(directory: Path, seed: int) -> int:
    """A random fairseq XLM-R of `TINY_SIZES` with one classification head; returns its vocabulary size."""
    from conversion.checkpoint import DICTIONARY_FILE
    from conversion.synthetic import build_fairseq_checkpoint

    from ..configuration_xlmr import XLMRConfig
    from ..sentencepiece_conversion import FAIRSEQ_SPECIAL_TOKENS, read_fairseq_dict

    build_fairseq_checkpoint(
        directory, XLMRConfig(**TINY_SIZES), classification_heads={HEAD_NAME: len(LABELS)}, seed=seed
    )
    # fairseq's ids: its special tokens, the dict.txt entries, then <mask>
    return len(FAIRSEQ_SPECIAL_TOKENS) + len(read_fairseq_dict(directory / DICTIONARY_FILE)) + 1


__all__ = ["add_subcommands", "run_demo", "demo"]
