"""Tokenizer throughput: XLMRTokenizerFast vs transformers' XLMRobertaTokenizer vs raw sentencepiece.

All three encode the same lines (the multilingual CLDR corpus of the parity tests, from `babel`) with the real
XLM-R vocabulary (tokenizer.json shipped by the test extra's package; sentencepiece runs on the model derived from
it). transformers' tokenizer and ours are called the same way, `tokenizer(batch)["input_ids"]`, in batches; raw
sentencepiece is `SentencePieceProcessor.encode(batch)` (ids only, no fairseq mapping, no offsets, no Python
objects per token), the floor. Also timed: ours with `verify_with_sentencepiece=False` (our `tokenizers` pipeline
alone, without sentencepiece; its ids differ from fairseq's on rare inputs). Ours by default takes the ids from
sentencepiece and builds offsets/word ids with `tokenizers` only when they are read; a fourth line times that too
(`return_offsets_mapping=True`, every row built by `tokenizers` and checked).

    python -m bench.bench_tokenizer [--batch-size 64] [--repeats 3] [--lines 20000]

Prints lines/s and tokens/s per tokenizer and the ratios to transformers' tokenizer. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import sentencepiece
from transformers import XLMRobertaTokenizer

from modeling_xlmr import XLMRTokenizerFast
from modeling_xlmr.sentencepiece_conversion import model_proto_from_tokenizer_json
from tests.support.corpus import multilingual_corpus, real_tokenizer_json_path


def time_pass(encode, batches: list[list[str]]) -> tuple[float, int]:
    """Seconds for one pass over all batches, and the number of ids it produced."""
    start = time.perf_counter()
    tokens = sum(len(ids) for batch in batches for ids in encode(batch))
    return time.perf_counter() - start, tokens


def best_times(candidates: dict, batches: list[list[str]], repeats: int) -> dict[str, tuple[float, int]]:
    """Fastest pass of each candidate; passes are interleaved so that load changes hit all of them alike."""
    best = {name: (float("inf"), 0) for name in candidates}
    for _ in range(repeats):
        for name, encode in candidates.items():
            best[name] = min(best[name], time_pass(encode, batches))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20000, help="corpus lines to use (the corpus repeats)")
    args = parser.parse_args()

    corpus = multilingual_corpus()
    lines = (corpus * (args.lines // len(corpus) + 1))[: args.lines]
    batches = [lines[i : i + args.batch_size] for i in range(0, len(lines), args.batch_size)]

    tokenizer_json = real_tokenizer_json_path()
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(tokenizer_json, os.path.join(directory, "tokenizer.json"))
        ours = XLMRTokenizerFast.from_pretrained(directory)
        unverified = XLMRTokenizerFast.from_pretrained(directory, verify_with_sentencepiece=False)
    stock = XLMRobertaTokenizer(tokenizer_file=tokenizer_json)
    processor = sentencepiece.SentencePieceProcessor(
        model_proto=model_proto_from_tokenizer_json(tokenizer_json).SerializeToString()
    )

    candidates = {
        "transformers XLMRobertaTokenizer": lambda batch: stock(batch)["input_ids"],
        "XLMRTokenizerFast (ours)": lambda batch: ours(batch)["input_ids"],
        "ours, with offsets": lambda batch: ours(batch, return_offsets_mapping=True)["input_ids"],
        "ours, verify_with_sentencepiece=False": lambda batch: unverified(batch)["input_ids"],
        "raw sentencepiece encode": processor.encode,
    }
    print(f"{len(lines)} lines, {sum(map(len, lines))} characters, batch size {args.batch_size}, {os.cpu_count()} CPUs")
    results = best_times(candidates, batches, args.repeats)
    reference_seconds = results["transformers XLMRobertaTokenizer"][0]
    print(f"{'tokenizer':<38} {'lines/s':>10} {'tokens/s':>11} {'speed vs transformers':>22}")
    for name, (seconds, tokens) in results.items():
        ratio = reference_seconds / seconds
        print(f"{name:<38} {len(lines) / seconds:>10.0f} {tokens / seconds:>11.0f} {ratio:>21.2f}x")


if __name__ == "__main__":
    main()
