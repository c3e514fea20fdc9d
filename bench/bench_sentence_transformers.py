"""sentence-transformers `encode`: a stock XLM-RoBERTa repo against the same repo adopted by `xlmr convert`.

One e5-shaped repo (XLM-R base size, seeded random weights, the real vocabulary, mean pooling, normalized,
"query: " / "passage: " prompts) is written once with stock transformers, then adopted by this package
(`adopt_transformers_repo`: same weights, plus the package's code). The same texts (the multilingual CLDR
corpus of the tokenizer tests) go through `SentenceTransformer(stock).encode(..., prompt_name="query")` and
`SentenceTransformer(adopted, trust_remote_code=True).encode(...)` in the same run, in fp32 and in bf16 (both
models cast to bf16). sentence-transformers sorts texts by length itself, so what is left to win is the
padding inside its sorted batches and the GEMM path.

    python -m bench.bench_sentence_transformers [--texts 1024] [--batch-size 32] [--repeats 3] [--dtype fp32 bf16]

Prints texts/s and tokens/s per model and dtype, the ratio ours/stock, and the max difference of the
embeddings (and their cosine, in bf16). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from bench.bench_speed import machine_description
from conversion.adopt import adopt_transformers_repo
from modeling_xlmr.hub.sentence_settings import SentenceSettings, write_sentence_transformers_files
from tests.support.corpus import multilingual_corpus, real_tokenizer_json_path
from tests.support.models import fast_stock_tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def write_stock_repo(directory: str) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from modeling_xlmr import XLMRConfig

    config = XLMRobertaConfig(
        **{k: v for k, v in XLMRConfig().to_diff_dict().items() if k in XLMRobertaConfig().to_dict()}
    )
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(directory)
    fast_stock_tokenizer(real_tokenizer_json_path()).save_pretrained(directory)
    prompts = {"query": "query: ", "passage": "passage: "}
    write_sentence_transformers_files(directory, SentenceSettings("mean", True, 512, prompts), config.hidden_size)


def encode_timed(model, texts: list[str], batch_size: int, repeats: int) -> tuple[float, np.ndarray]:
    model.encode(texts[:batch_size], prompt_name="query", batch_size=batch_size)  # warm-up: kernels, caches
    best, embeddings = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        embeddings = model.encode(texts, prompt_name="query", batch_size=batch_size, convert_to_numpy=True)
        best = min(best, time.perf_counter() - start)
    return best, embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()

    corpus = multilingual_corpus()
    texts = corpus[:: max(1, len(corpus) // args.texts)][: args.texts]
    print(machine_description())
    with tempfile.TemporaryDirectory() as workdir:
        stock_dir, ours_dir = os.path.join(workdir, "stock"), os.path.join(workdir, "adopted")
        write_stock_repo(stock_dir)
        adopt_transformers_repo(stock_dir, ours_dir)
        tokens = int(
            SentenceTransformer(stock_dir).tokenize(["query: " + text for text in texts])["attention_mask"].sum()
        )
        print(
            f"{len(texts)} texts, {tokens} tokens with the prompt, batch size {args.batch_size}, best of {args.repeats}"
        )
        print(f"{'dtype':<6} {'model':<28} {'texts/s':>9} {'tokens/s':>10} {'ratio':>7}  accuracy vs stock")
        for name in args.dtype:
            kwargs = {"model_kwargs": {"dtype": DTYPES[name]}}
            stock = SentenceTransformer(stock_dir, **kwargs)
            ours = SentenceTransformer(ours_dir, trust_remote_code=True, **kwargs)
            stock_seconds, expected = encode_timed(stock, texts, args.batch_size, args.repeats)
            ours_seconds, actual = encode_timed(ours, texts, args.batch_size, args.repeats)
            difference = float(np.abs(actual.astype(np.float64) - expected).max())
            cosine = float((actual.astype(np.float64) * expected).sum(-1).min())  # both are normalized
            print(
                f"{name:<6} {'stock sentence-transformers':<28} {len(texts) / stock_seconds:>9.1f} {tokens / stock_seconds:>10.0f} {1.0:>6.2f}x"
            )
            print(
                f"{name:<6} {'adopted, trust_remote_code':<28} {len(texts) / ours_seconds:>9.1f} {tokens / ours_seconds:>10.0f} "
                f"{stock_seconds / ours_seconds:>6.2f}x  max abs diff {difference:.1e}, min cosine {cosine:.6f}"
            )
            del stock, ours
    print(f"load average at the end {os.getloadavg()[0]:.1f} (above ~0.5 means other processes shared the CPU)")


if __name__ == "__main__":
    main()
