"""Streaming sharded extraction: peak memory against corpus size, and Ray throughput with 1 and 2 actors.

    python -m bench.bench_streaming                 # peak RSS at 50k and 200k lines (tiny model)
    python -m bench.bench_streaming --ray           # also --engine ray with 1 and 2 actors
    python -m bench.bench_streaming --lines 5000 20000 --ray-lines 20000

Each run is `xlmr extract ... --output DIR/` in a fresh process (the model is a random 2-layer, hidden-32
XLM-R on the real 250,002-piece vocabulary, as in the tests); its peak RSS is the kernel's (`wait4`'s
ru_maxrss). The corpus is seeded multilingual text, 3 to 30 words a line, written to disk first. Throughput
is measured between the first and the last shard written (the journal's file times), so process start,
model loading and Ray's actor start-up are left out; the whole wall time is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_speed import machine_description
from tests.support.corpus import real_tokenizer_json_path
from tests.support.models import TEXTS, build_tiny_repo, fast_stock_tokenizer


def write_corpus(path: Path, lines: int, seed: int = 0) -> None:
    words = " ".join(TEXTS).split()
    generator = random.Random(seed)
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(" ".join(generator.choices(words, k=generator.randint(3, 30))) + "\n" for _ in range(lines))


def run_extract(repo: Path, corpus: Path, output: Path, *options: str) -> dict:
    """One `xlmr extract` in a fresh process: wall time, peak RSS (MiB) and steady throughput."""
    command = [sys.executable, "-m", "modeling_xlmr.cli", "extract", "--model", str(repo), "--input", str(corpus),
               "--output", f"{output}/", "--pooling", "mean", "--no-progress", *options]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, **steady_throughput(output)}


def steady_throughput(output: Path) -> dict:
    """Texts/s between the first and the last shard's journal entry (start-up excluded)."""
    entries = sorted(
        (path.stat().st_mtime, json.loads(path.read_text())["rows"]) for path in (output / "_shards").iterdir()
    )
    if len(entries) < 2:
        return {"texts_per_s": float("nan")}
    rows = sum(rows for _, rows in entries[1:])
    return {"texts_per_s": rows / max(entries[-1][0] - entries[0][0], 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--ray", action="store_true", help="also run --engine ray with 1 and 2 actors")
    parser.add_argument("--ray-lines", type=int, nargs=2, default=[10_000, 40_000])
    args = parser.parse_args()
    print(machine_description())

    with tempfile.TemporaryDirectory(prefix="bench_streaming_") as scratch:
        scratch = Path(scratch)
        repo = build_tiny_repo(scratch / "repo", fast_stock_tokenizer(real_tokenizer_json_path()))
        results = {}
        for lines in args.lines:
            corpus = scratch / f"corpus-{lines}.txt"
            write_corpus(corpus, lines)
            options = ["--shard-size", str(args.shard_size), "--block-size", str(args.block_size)]
            results[lines] = run_extract(repo, corpus, scratch / f"out-{lines}", *options)
            print(f"one machine, {lines:>9,} lines ({corpus.stat().st_size / 2**20:,.1f} MiB): "
                  f"peak RSS {results[lines]['peak_rss_mib']:,.0f} MiB, {results[lines]['texts_per_s']:,.0f} texts/s "
                  f"steady, {results[lines]['wall_s']:,.1f} s wall", flush=True)  # fmt: skip
        smallest, largest = min(results), max(results)
        growth = results[largest]["peak_rss_mib"] - results[smallest]["peak_rss_mib"]
        print(f"peak RSS {largest:,} vs {smallest:,} lines ({largest / smallest:.0f}x the corpus): "
              f"{growth:+,.0f} MiB ({results[largest]['peak_rss_mib'] / results[smallest]['peak_rss_mib']:.3f}x)")  # fmt: skip

        if args.ray:
            ray_throughput(repo, scratch, args.ray_lines)


def ray_throughput(repo: Path, scratch: Path, sizes: list[int]) -> None:
    """Texts/s of `--engine ray` with 1 and 2 actors, from the difference of two corpus sizes: Ray's and the
    actors' start-up (tens of seconds on two cores) cancel out, and shards finishing in bursts do not matter."""
    small, large = sorted(sizes)
    corpus = {lines: scratch / f"ray-corpus-{lines}.txt" for lines in (small, large)}
    for lines, path in corpus.items():
        write_corpus(path, lines, seed=1)
    rates = {}
    for actors in (1, 2):
        walls = {}
        for lines, path in corpus.items():
            options = ["--engine", "ray", "--num-actors", str(actors), "--shard-size", "1000"]
            walls[lines] = run_extract(repo, path, scratch / f"ray-{actors}-{lines}", *options)["wall_s"]
        rates[actors] = (large - small) / max(walls[large] - walls[small], 1e-9)
        print(f"--engine ray, {actors} actor(s): {rates[actors]:,.0f} texts/s ({large:,} lines in {walls[large]:.1f} s, "
              f"{small:,} in {walls[small]:.1f} s, start-up included in both)", flush=True)  # fmt: skip
    print(f"2 actors / 1 actor: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
