"""Throughput of this package's packed fast path against stock transformers, measured side by side.

    python -m bench.bench_speed            # base and large, fp32, bf16 and int8, ONNX Runtime / CTranslate2 if installed
    python -m bench.bench_speed --quick    # base, fewer sentences, one repeat: under a minute
    python -m bench.bench_speed --size base --latency-only   # the batch-of-one latency rows alone

Both models get the same seeded random weights (stock `XLMRobertaModel` is built first and its state
dict is loaded into `XLMRModel`, strict). The workload (bench/workload.py) is seeded lognormal
sentences, batch 32 in input order, padded to each batch's longest sentence. Every configuration
runs the whole workload; the first pass warms up, then the fastest of `--repeats` timed passes is
reported (repeats are interleaved across configurations, so a noisy neighbour hurts all alike).
Accuracy is measured over real tokens against stock sdpa fp32: max abs difference and per-token
cosine similarity (mean and minimum). The peers (bench/peers.py): ONNX Runtime fp32 and dynamic int8 (QInt8,
per channel) on the plain and the fused graph, CTranslate2 int8 (in a process of its own, timing itself: run here,
it would slow torch for the rest of the run), all on the same weights. Batch-of-one latency:
median over `--latency-repeats` calls of one unpadded sequence of 12 and of 48 tokens.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers
from transformers import XLMRobertaConfig, XLMRobertaModel

from bench.peers import ctranslate2_runner, onnx_runners
from bench.workload import (
    Workload,
    batches_by_token_budget,
    batches_in_order,
    batches_sorted,
    make_workload,
    padding_fraction,
)
from modeling_xlmr.configuration_xlmr import XLMRConfig
from modeling_xlmr.modeling_xlmr import XLMRModel

BASELINE = "stock sdpa fp32, input order"


@dataclass
class Config:
    name: str
    run_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # -> (batch, seq, hidden)
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    order: list[int]  # sentence index of each row, batch after batch
    times: list[float] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)

    def run(self) -> float:
        if hasattr(self.run_batch, "timed_pass"):  # an engine in another process, which times itself (peers.py)
            elapsed, self.outputs = self.run_batch.timed_pass(self.batches)
            return elapsed
        start = time.perf_counter()
        outputs = [self.run_batch(input_ids, attention_mask) for input_ids, attention_mask in self.batches]
        if outputs[0].is_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        self.outputs = outputs
        return elapsed

    def per_sentence(self) -> dict[int, torch.Tensor]:
        """Real-token states of every sentence, keyed by its index in the workload."""
        result, row = {}, 0
        for (_, attention_mask), output in zip(self.batches, self.outputs):
            for mask_row, states in zip(attention_mask.bool(), output):
                result[self.order[row]] = states[mask_row].float().cpu()
                row += 1
        return result


def machine_description() -> str:
    model_name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model_name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    features = [
        f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8") if f in flags
    ]
    features.append("(no VNNI: 7-bit int8 activations)" if not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags else "")
    gpu = f"{torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    return gpu + (
        f"{model_name}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}; flags: {' '.join(features).strip()}), "
        f"transformers {transformers.__version__}"
    )


def build_models(size: str) -> tuple[XLMRobertaModel, XLMRModel]:
    ours_config = XLMRConfig.large() if size == "large" else XLMRConfig()
    stock_config = XLMRobertaConfig(**{
        name: getattr(ours_config, name)
        for name in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
            "bos_token_id", "eos_token_id",
        )
    })
    stock_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    stock = XLMRobertaModel(stock_config, add_pooling_layer=False).eval()
    ours = XLMRModel(ours_config, add_pooling_layer=False).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    return stock, ours


def torch_runner(model: torch.nn.Module, **kwargs) -> Callable:
    def run_batch(input_ids, attention_mask):
        with torch.inference_mode():
            return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    return run_batch


def accuracy(reference: dict[int, torch.Tensor], candidate: dict[int, torch.Tensor]) -> tuple[float, float, float]:
    ref = torch.cat([reference[i] for i in sorted(reference)])
    out = torch.cat([candidate[i] for i in sorted(reference)])
    cosine = torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=-1)
    return float((ref - out).abs().max()), float(cosine.mean()), float(cosine.min())


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
LATENCY_LENGTHS = (12, 48)


def ours_in(ours: XLMRModel, dtype: str) -> XLMRModel:
    if dtype == "fp32":
        return ours
    if dtype == "int8":  # fp32 weights, int8 GEMMs (quantize_for_inference)
        return copy.deepcopy(ours).quantize_for_inference()
    return copy.deepcopy(ours).to(DTYPES[dtype])


def peer_runners(stock: XLMRobertaModel, example, workdir: str, args: argparse.Namespace) -> dict[str, Callable]:
    """{short name: run_batch} of every peer that could be built here."""
    runners = {}
    if args.onnx:
        runners.update({f"ONNX Runtime {name}": runner for name, runner in onnx_runners(stock, example, workdir).items()})
    if args.ctranslate2:
        runner = ctranslate2_runner(stock, workdir)
        if runner is not None:
            runners["CTranslate2 int8"] = runner
    return runners


def close_peers(peers: dict[str, Callable]) -> None:
    for runner in peers.values():
        if hasattr(runner, "close"):  # an engine's own process
            runner.close()


def bench_size(size: str, workload: Workload, args: argparse.Namespace) -> None:
    build_start = time.perf_counter()
    stock, ours = build_models(size)
    device = torch.device(args.device)
    stock, ours = stock.to(device), ours.to(device)
    in_order = [(i.to(device), m.to(device)) for i, m in batches_in_order(workload, args.batch_size)]
    sorted_batches = [(i.to(device), m.to(device)) for i, m in batches_sorted(workload, args.batch_size)]
    input_order = list(range(len(workload.sentences)))
    length_order = sorted(input_order, key=lambda i: len(workload.sentences[i]))
    low_precisions = [d for d in args.dtype if d != "fp32"]

    workdir = tempfile.TemporaryDirectory(prefix="xlmr-bench-")
    peers = peer_runners(stock, in_order[0], workdir.name, args) if device.type == "cpu" else {}
    ours_by_dtype = {dtype: ours_in(ours, dtype) for dtype in args.dtype}
    if args.latency_repeats:
        latency_table(stock, ours_by_dtype, peers, workload, args.latency_repeats)
    if args.latency_only:
        close_peers(peers)
        workdir.cleanup()
        return

    configs = [
        Config(BASELINE, torch_runner(stock), in_order, input_order),
        Config("stock sdpa fp32, length-sorted", torch_runner(stock), sorted_batches, length_order),
    ]
    for dtype in low_precisions:
        if dtype != "int8":
            stock_low = copy.deepcopy(stock).to(DTYPES[dtype])
            configs.append(Config(f"stock sdpa {dtype}, input order", torch_runner(stock_low), in_order, input_order))
    for name, runner in peers.items():
        if name == "ONNX Runtime plain fp32" or "int8" in name and "CTranslate2" not in name:
            configs.append(Config(f"{name}, input order", runner, in_order, input_order))
        if "int8" in name:  # sorting is free for the peers too
            configs.append(Config(f"{name}, length-sorted", runner, sorted_batches, length_order))
    by_budget = [(i.to(device), m.to(device)) for i, m in batches_by_token_budget(workload, args.token_budget)]
    for dtype, model in ours_by_dtype.items():
        model = torch_runner(model, unpad_inputs=True)
        configs.append(Config(f"ours {dtype}, input order", model, in_order, input_order))
        if dtype == "int8":
            configs.append(Config(f"ours {dtype}, length-sorted", model, sorted_batches, length_order))
        if args.token_budget:  # what the hub interface's embed does (it also sorts by length)
            configs.append(Config(f"ours {dtype}, {args.token_budget}-token batches", model, by_budget, input_order))
    print(f"  models built in {time.perf_counter() - build_start:.0f}s")

    for config in configs:  # warm-up pass: first calls, prepared weights, ONNX Runtime's first run
        config.run()
    for _ in range(args.repeats):
        for config in configs:
            config.times.append(config.run())

    reference = configs[0].per_sentence()
    throughput = {c.name: workload.real_tokens / min(c.times) for c in configs}
    baselines = [c.name for c in configs if not c.name.startswith("ours")]
    letters = "ABCDEFGHIJKLMN"
    print(f"  {'configuration':35s} {'tokens/s':>9s} " + " ".join(f"{'x' + letters[i]:>6s}" for i in range(len(baselines)))
          + f" {'max|diff|':>10s} {'cos mean':>9s} {'cos min':>9s}")
    for config in configs:
        max_diff, cos_mean, cos_min = accuracy(reference, config.per_sentence())
        ratios = " ".join(f"{throughput[config.name] / throughput[b]:6.2f}" for b in baselines)
        letter = f"{letters[baselines.index(config.name)]}: " if config.name in baselines else "   "
        print(f"  {letter}{config.name:32s} {throughput[config.name]:9.0f} {ratios} "
              f"{max_diff:10.2e} {cos_mean:9.6f} {cos_min:9.6f}")
    print("  xA, xB, ...: this row's tokens/s over baseline A's, B's, ...; max|diff| and cosines vs A over real tokens")
    print_targets(throughput, args.token_budget)
    close_peers(peers)
    workdir.cleanup()


def print_targets(throughput: dict[str, float], token_budget: int) -> None:
    """Issue 16's ratios, from this run's rows: ours int8 over ours bf16 and over the best int8 peer."""
    int8_rows = [name for name in throughput if name.startswith("ours int8")]
    peers = {name: value for name, value in throughput.items() if "int8" in name and not name.startswith("ours")}
    if not int8_rows:
        return
    best_ours = max(int8_rows, key=throughput.get)
    for other in ("ours bf16, input order", f"ours bf16, {token_budget}-token batches", "ours fp32, input order"):
        if other in throughput:
            print(f"  {best_ours} / {other}: {throughput[best_ours] / throughput[other]:.2f}x")
    if peers:
        best_peer = max(peers, key=peers.get)
        print(f"  {best_ours} / best int8 peer ({best_peer}): {throughput[best_ours] / peers[best_peer]:.2f}x")


def latency_table(stock, ours_by_dtype: dict, peers: dict, workload: Workload, repeats: int) -> None:
    """Median milliseconds for one unpadded sequence of each length (a search query, a short document).

    Each engine's calls run back to back. Taking turns call by call was tried (so that the VM's drift would reach
    all engines alike) and is worse: each runtime's threads spin for a while after a call and take the two cores
    from the next engine's (on a Zen 4, ONNX Runtime's fused int8 measured 35.7 / 49.2 ms that way against 6.8 /
    19.2 back to back; CTranslate2, in its own process, 30.8 / 47.5 against 17-24 / 28-34)."""
    runners = {"stock sdpa fp32": torch_runner(stock)}
    runners.update({f"ours {dtype}": torch_runner(model) for dtype, model in ours_by_dtype.items()})
    runners.update(peers)
    source = max(workload.sentences, key=len)
    print(f"  batch of one, median ms of {repeats} calls (no padding; ours: plain model(input_ids), no mask):")
    print(f"    {'engine':32s} " + " ".join(f"{length:>5d} tok" for length in LATENCY_LENGTHS))
    for name, runner in runners.items():
        cells = []
        for length in LATENCY_LENGTHS:
            input_ids = torch.cat([source[: length - 1], source[-1:]]).unsqueeze(0)  # <s> ... </s>
            mask = None if name.startswith("ours") else torch.ones_like(input_ids)  # ours: no mask, as users call it
            if hasattr(runner, "timed_calls"):  # an engine in another process, which times itself (peers.py)
                cells.append(f"{statistics.median(runner.timed_calls(input_ids, repeats)) * 1e3:9.2f}")
                continue
            for _ in range(3):
                runner(input_ids, mask)  # first calls: kernels built, caches filled
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                runner(input_ids, mask)
                times.append(time.perf_counter() - start)
            cells.append(f"{statistics.median(times) * 1e3:9.2f}")
        print(f"    {name:32s} " + " ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="base only, 64 sentences, 1 repeat, no ONNX export")
    parser.add_argument("--size", choices=["base", "large", "both"], default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (then e.g. --dtype fp32 fp16 --batch-size 256)")
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["fp32", "bf16", "int8"],
                        help="ours in each (stock too, but int8); fp32 is always measured as the reference")
    parser.add_argument("--sentences", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--token-budget", type=int, default=None,
                        help="also run ours on input-order batches of at most this many real tokens "
                             "(default 4096; 0 to skip; skipped with --quick)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the stock model exported to ONNX Runtime (default: on unless --quick)")
    parser.add_argument("--ctranslate2", action=argparse.BooleanOptionalAction, default=None,
                        help="also run CTranslate2 int8 (pip install ctranslate2; default: on unless --quick)")
    parser.add_argument("--latency-repeats", type=int, default=None,
                        help="batch-of-one calls per engine and length (default 30; 0 to skip; skipped with --quick)")
    parser.add_argument("--latency-only", action="store_true", help="the batch-of-one latency rows only")
    args = parser.parse_args(argv)
    args.dtype = ["fp32"] + [d for d in args.dtype if d != "fp32"]
    args.size = args.size or ("base" if args.quick else "both")
    args.sentences = args.sentences or (64 if args.quick else 192)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.onnx = (not args.quick) if args.onnx is None else args.onnx
    args.ctranslate2 = (not args.quick) if args.ctranslate2 is None else args.ctranslate2
    if args.latency_repeats is None:
        args.latency_repeats = 0 if args.quick else 30
    if args.token_budget is None:
        args.token_budget = 0 if args.quick else 4096

    workload = make_workload(num_sentences=args.sentences)
    print(f"machine: {machine_description()}")
    print(f"workload: {len(workload.sentences)} sentences, {workload.real_tokens} real tokens, batch {args.batch_size}, "
          f"{padding_fraction(batches_in_order(workload, args.batch_size)):.0%} padding in input order; "
          f"best of {args.repeats} after a warm-up pass; load average {os.getloadavg()[0]:.1f}")
    for size in (["base", "large"] if args.size == "both" else [args.size]):
        print(f"xlmr.{size}:")
        bench_size(size, workload, args)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (above ~0.5 means other processes shared the CPU)")


if __name__ == "__main__":
    main()
