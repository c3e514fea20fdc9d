"""Tokenizer throughput: XLMRTokenizerFast vs transformers' XLMRobertaTokenizer vs raw sentencepiece.

All encode the same lines (the multilingual CLDR corpus of the parity tests, from `babel`) with the real XLM-R
vocabulary (tokenizer.json shipped by the test extra's package; sentencepiece runs on the model derived from it).
transformers' tokenizer and ours are called the same way, in batches, in three modes:

* ids: `tokenizer(batch)["input_ids"]`;
* offsets: `tokenizer(batch, return_offsets_mapping=True)`, reading the ids and the offsets;
* words: `tokenizer(words, is_split_into_words=True, return_offsets_mapping=True)` on each line split on whitespace
  (what NER does), reading the ids, the offsets and every row's `word_ids()`.

Raw sentencepiece is `SentencePieceProcessor.encode(batch)` (ids only, no fairseq mapping, no offsets, no Python
objects per token), the floor; ours with `verify_with_sentencepiece=False` is our `tokenizers` pipeline alone (its
ids differ from fairseq's on rare inputs). The same run counts the lines where ours and transformers' (and ours and
our `tokenizers` pipeline's) give the same ids, and among those the lines whose spans or word ids differ.

    python -m bench.bench_tokenizer [--batch-size 64] [--repeats 5] [--lines 20000] [--input FILE]

`--input FILE` takes the lines of another corpus instead (UTF-8, one text per line, split on "\n" only; empty
lines skipped).

Prints the machine, lines/s and tokens/s per tokenizer and mode (fastest pass) and the ratio to transformers'
tokenizer in the same mode: the median, over rounds, of the ratio of two passes made one after the other (the order
alternating), so that a shared machine's changing load does not land on one side. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import sentencepiece
from transformers import XLMRobertaTokenizer

from bench.bench_speed import machine_description
from modeling_xlmr import XLMRTokenizerFast
from modeling_xlmr.sentencepiece_conversion import model_proto_from_tokenizer_json
from tests.support.corpus import multilingual_corpus, real_tokenizer_json_path


def time_pass(encode, batches: list) -> tuple[float, int]:
    """Seconds for one pass over all batches, and the number of ids it produced."""
    start = time.perf_counter()
    tokens = sum(len(ids) for batch in batches for ids in encode(batch))
    return time.perf_counter() - start, tokens


def paired_passes(stock, candidate, batches: list, repeats: int) -> tuple[float, float, int, float]:
    """Alternate passes of transformers' tokenizer and a candidate (the order flips each round, so neither always
    runs first): both fastest passes, the token count, and the median over rounds of stock seconds / candidate
    seconds. Each ratio compares two passes made seconds apart, so the load changes of a shared VM (which move
    absolute timings by a third from minute to minute) cancel out of it."""
    stock_best = candidate_best = float("inf")
    ratios, tokens = [], 0
    for round_index in range(repeats):
        order = (stock, candidate) if round_index % 2 == 0 else (candidate, stock)
        seconds = {}
        for encode in order:
            seconds[encode], tokens = time_pass(encode, batches)
        stock_best, candidate_best = min(stock_best, seconds[stock]), min(candidate_best, seconds[candidate])
        ratios.append(seconds[stock] / seconds[candidate])
    return stock_best, candidate_best, tokens, statistics.median(ratios)


def with_offsets(tokenizer):
    def encode(batch):
        encoded = tokenizer(batch, return_offsets_mapping=True)
        assert len(encoded["offset_mapping"]) == len(batch)
        return encoded["input_ids"]

    return encode


def with_words(tokenizer):
    def encode(batch):
        encoded = tokenizer(batch, is_split_into_words=True, return_offsets_mapping=True)
        words = [encoded.word_ids(row) for row in range(len(batch))]
        assert len(words) == len(encoded["offset_mapping"]) == len(batch)
        return encoded["input_ids"]

    return encode


def compare(ours, stock, batches: list, **options) -> tuple[int, int, int]:
    """(rows, rows with equal ids, rows with equal ids but different offsets or word ids)."""
    rows = same_ids = different = 0
    for batch in batches:
        mine, theirs = (
            ours(batch, return_offsets_mapping=True, **options),
            stock(batch, return_offsets_mapping=True, **options),
        )
        for row in range(len(batch)):
            rows += 1
            if mine["input_ids"][row] != theirs["input_ids"][row]:
                continue
            same_ids += 1
            spans_differ = mine["offset_mapping"][row] != theirs["offset_mapping"][row]
            different += spans_differ or mine.word_ids(row) != theirs.word_ids(row)
    return rows, same_ids, different


def read_lines(path: str) -> list[str]:
    """The non-empty lines of a UTF-8 file, split on "\n" only (a text may hold other line breaks)."""
    try:
        with open(path, encoding="utf-8", newline="") as file:
            lines = [line.removesuffix("\r") for line in file.read().split("\n") if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"bench_tokenizer: cannot read --input {path}: {error}") from None
    if not lines:
        raise SystemExit(f"bench_tokenizer: --input {path} has no non-empty line")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20000, help="corpus lines to use (the corpus repeats)")
    parser.add_argument("--input", help="a UTF-8 text file to use instead, one text per line")
    args = parser.parse_args()

    corpus = multilingual_corpus() if args.input is None else read_lines(args.input)
    lines = (corpus * (args.lines // len(corpus) + 1))[: args.lines]
    batches = [lines[i : i + args.batch_size] for i in range(0, len(lines), args.batch_size)]
    word_batches = [[line.split() for line in batch] for batch in batches]

    tokenizer_json = real_tokenizer_json_path()
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(tokenizer_json, os.path.join(directory, "tokenizer.json"))
        ours = XLMRTokenizerFast.from_pretrained(directory)
        unverified = XLMRTokenizerFast.from_pretrained(directory, verify_with_sentencepiece=False)
    stock = XLMRobertaTokenizer(tokenizer_file=tokenizer_json)
    processor = sentencepiece.SentencePieceProcessor(
        model_proto=model_proto_from_tokenizer_json(tokenizer_json).SerializeToString()
    )
    # the one-off character tables (built on the first text that is not kept character for character: a tab, a
    # fullwidth letter, a run of spaces) are not part of a pass
    ours(["\tＡ  warm-up "], return_offsets_mapping=True)["offset_mapping"]

    modes = {
        "ids": (lambda tokenizer: lambda batch: tokenizer(batch)["input_ids"], batches),
        "offsets": (with_offsets, batches),
        "words": (with_words, word_batches),
    }
    rows = []  # (name, mode, seconds, tokens, median ratio to transformers' tokenizer in that mode)
    for mode, (wrap, inputs) in modes.items():  # each mode's pair timed together, one mode after the other
        stock_seconds, seconds, tokens, ratio = paired_passes(wrap(stock), wrap(ours), inputs, args.repeats)
        rows += [("transformers XLMRobertaTokenizer", mode, stock_seconds, tokens, 1.0)]
        rows += [("XLMRTokenizerFast (ours)", mode, seconds, tokens, ratio)]
    ids_of_stock = modes["ids"][0](stock)
    for name, encode in (
        ("ours, verify_with_sentencepiece=False", lambda batch: unverified(batch)["input_ids"]),
        ("raw sentencepiece encode", processor.encode),
    ):
        _, seconds, tokens, ratio = paired_passes(ids_of_stock, encode, batches, args.repeats)
        rows.append((name, "ids", seconds, tokens, ratio))

    print(machine_description())
    source = "the CLDR corpus" if args.input is None else args.input
    print(f"{len(lines)} lines of {source}, {sum(map(len, lines))} characters, batch size {args.batch_size}")
    print(f"{'tokenizer, mode':<46} {'lines/s':>10} {'tokens/s':>11} {'vs transformers, same mode':>27}")
    for name, mode, seconds, tokens, ratio in rows:
        label = f"{name}, {mode}"
        print(f"{label:<46} {len(lines) / seconds:>10.0f} {tokens / seconds:>11.0f} {ratio:>26.2f}x")
    print("(lines/s and tokens/s: fastest pass; ratio: median over rounds of paired passes, seconds apart)")

    for mode, inputs, options in (("offsets", batches, {}), ("words", word_batches, {"is_split_into_words": True})):
        for reference_name, reference in (("transformers'", stock), ("our tokenizers pipeline's", unverified)):
            rows, same, different = compare(ours, reference, inputs, **options)
            print(
                f"{mode}: ids equal to {reference_name} on {same} of {rows} lines; "
                f"offsets or word ids differ on {different} of those"
            )


if __name__ == "__main__":
    main()
