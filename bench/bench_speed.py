"""Throughput of this package's packed fast path against stock transformers, measured side by side.

    python -m bench.bench_speed            # base and large, fp32 and bf16, ONNX Runtime if installed
    python -m bench.bench_speed --quick    # base, fewer sentences, one repeat: under a minute

Both models get the same seeded random weights (stock `XLMRobertaModel` is built first and its state
dict is loaded into `XLMRModel`, strict). The workload (bench/workload.py) is seeded lognormal
sentences, batch 32 in input order, padded to each batch's longest sentence. Every configuration
runs the whole workload; the first pass warms up, then the fastest of `--repeats` timed passes is
reported (repeats are interleaved across configurations, so a noisy neighbour hurts all alike).
Accuracy is measured over real tokens against stock sdpa fp32: max abs difference and per-token
cosine similarity (mean and minimum).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers
from transformers import XLMRobertaConfig, XLMRobertaModel

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
    features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    gpu = f"{torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    return gpu + (
        f"{model_name}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}, {' '.join(features) or 'no AVX-512'}), "
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


def onnx_runner(stock: XLMRobertaModel, example: tuple[torch.Tensor, torch.Tensor], workdir: str) -> Callable | None:
    """Stock model exported by torch.onnx (dynamic batch and length), run by ONNX Runtime on the same threads."""
    try:
        import onnxruntime
    except ImportError:
        return None
    path = os.path.join(workdir, "xlmr.onnx")
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on renamed dynamic axes
        torch.onnx.export(
            stock, (), path, kwargs={"input_ids": example[0], "attention_mask": example[1]},
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
            dynamo=True, external_data=True, optimize=True, verbose=False,
        )
    print(f"  exported to ONNX in {time.perf_counter() - start:.0f}s")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run_batch(input_ids, attention_mask):
        (hidden,) = session.run(["last_hidden_state"], {
            "input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
        })
        return torch.from_numpy(hidden)

    return run_batch


def accuracy(reference: dict[int, torch.Tensor], candidate: dict[int, torch.Tensor]) -> tuple[float, float, float]:
    ref = torch.cat([reference[i] for i in sorted(reference)])
    out = torch.cat([candidate[i] for i in sorted(reference)])
    cosine = torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=-1)
    return float((ref - out).abs().max()), float(cosine.mean()), float(cosine.min())


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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

    configs = [
        Config(BASELINE, torch_runner(stock), in_order, input_order),
        Config("stock sdpa fp32, length-sorted", torch_runner(stock), sorted_batches, length_order),
    ]
    for dtype in low_precisions:
        stock_low = copy.deepcopy(stock).to(DTYPES[dtype])
        configs.append(Config(f"stock sdpa {dtype}, input order", torch_runner(stock_low), in_order, input_order))
    workdir = tempfile.TemporaryDirectory(prefix="xlmr-bench-")
    if args.onnx and device.type == "cpu":
        runner = onnx_runner(stock, in_order[0], workdir.name)
        if runner is None:
            print("  (onnxruntime not installed: pip install onnxruntime onnx onnxscript)")
        else:
            configs.append(Config("ONNX Runtime fp32, input order", runner, in_order, input_order))
    by_budget = [(i.to(device), m.to(device)) for i, m in batches_by_token_budget(workload, args.token_budget)]
    for dtype in args.dtype:
        model = torch_runner(ours if dtype == "fp32" else copy.deepcopy(ours).to(DTYPES[dtype]), unpad_inputs=True)
        configs.append(Config(f"ours {dtype}, input order", model, in_order, input_order))
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
    letters = "ABCDEFGH"
    print(f"  {'configuration':35s} {'tokens/s':>9s} " + " ".join(f"{'x' + letters[i]:>6s}" for i in range(len(baselines)))
          + f" {'max|diff|':>10s} {'cos mean':>9s} {'cos min':>9s}")
    for config in configs:
        max_diff, cos_mean, cos_min = accuracy(reference, config.per_sentence())
        ratios = " ".join(f"{throughput[config.name] / throughput[b]:6.2f}" for b in baselines)
        letter = f"{letters[baselines.index(config.name)]}: " if config.name in baselines else "   "
        print(f"  {letter}{config.name:32s} {throughput[config.name]:9.0f} {ratios} "
              f"{max_diff:10.2e} {cos_mean:9.6f} {cos_min:9.6f}")
    print("  xA, xB, ...: this row's tokens/s over baseline A's, B's, ...; max|diff| and cosines vs A over real tokens")
    workdir.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="base only, 64 sentences, 1 repeat, no ONNX export")
    parser.add_argument("--size", choices=["base", "large", "both"], default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (then e.g. --dtype fp32 fp16 --batch-size 256)")
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"],
                        help="ours and stock in each; fp32 is always measured as the reference")
    parser.add_argument("--sentences", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--token-budget", type=int, default=None,
                        help="also run ours on input-order batches of at most this many real tokens "
                             "(default 4096; 0 to skip; skipped with --quick)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the stock model exported to ONNX Runtime (default: on unless --quick)")
    args = parser.parse_args(argv)
    args.dtype = ["fp32"] + [d for d in args.dtype if d != "fp32"]
    args.size = args.size or ("base" if args.quick else "both")
    args.sentences = args.sentences or (64 if args.quick else 192)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.onnx = (not args.quick) if args.onnx is None else args.onnx
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
