"""The other engines `bench_speed` measures on the same weights: ONNX Runtime (fp32 and dynamic int8, plain and
fused graphs) and CTranslate2 int8. Each builder returns {row name: run_batch} or says on stdout why it cannot.

run_batch(input_ids, attention_mask) -> (batch, seq, hidden) float tensor, like the torch runners.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from transformers import XLMRobertaForSequenceClassification, XLMRobertaModel


def _session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run_batch(input_ids, attention_mask):
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        (hidden,) = session.run(["last_hidden_state"], feeds)
        return torch.from_numpy(hidden)

    return run_batch


def _quantize(source: str, target: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused graph's com.microsoft operators (Attention, SkipLayerNormalization) defeat ONNX shape inference,
    # so the quantizer cannot tell the type a MatMul's output dequantizes to: it is float here.
    options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, extra_options=options)


class _LastHiddenState(torch.nn.Module):
    def __init__(self, model: XLMRobertaModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def onnx_runners(stock: XLMRobertaModel, example: tuple[torch.Tensor, torch.Tensor], workdir: str) -> dict:
    """ONNX Runtime on stock exported twice:

    * "plain": torch.onnx's dynamo exporter (what `xlmr export-onnx` writes), fp32 and dynamic int8;
    * "fused": the TorchScript exporter on eager attention, then onnxruntime's transformer optimizer
      (`optimize_model(model_type="bert")`: fused Attention, BiasGelu, SkipLayerNormalization), fp32 and
      dynamic int8 (QInt8, per channel): the fastest ONNX Runtime graph for this model.
    """
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        print("  (onnxruntime not installed: pip install onnxruntime onnx onnxscript)")
        return {}
    runners: dict[str, Callable] = {}
    start = time.perf_counter()
    plain = os.path.join(workdir, "plain.onnx")
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on renamed dynamic axes and deprecations
        torch.onnx.export(
            stock, (), plain, kwargs={"input_ids": example[0], "attention_mask": example[1]}, **names,
            dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
            dynamo=True, external_data=True, optimize=True, verbose=False,
        )  # fmt: skip
        runners["plain fp32"] = _session(plain)
        _quantize(plain, os.path.join(workdir, "plain_int8.onnx"))
        runners["plain int8"] = _session(os.path.join(workdir, "plain_int8.onnx"))
        try:
            eager = copy.deepcopy(stock)
            eager.config._attn_implementation = "eager"  # the optimizer fuses the explicit softmax(QK^T)V pattern
            scripted = os.path.join(workdir, "scripted.onnx")
            axes = {name: {0: "batch", 1: "length"} for name in ("input_ids", "attention_mask", "last_hidden_state")}
            torch.onnx.export(_LastHiddenState(eager), example, scripted, **names, dynamic_axes=axes, opset_version=17,
                              dynamo=False)  # fmt: skip
            config = stock.config
            fused = optimize_model(scripted, model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)  # fmt: skip
            statistics = fused.get_fused_operator_statistics()
            fused.save_model_to_file(os.path.join(workdir, "fused.onnx"), use_external_data_format=True)
            runners["fused fp32"] = _session(os.path.join(workdir, "fused.onnx"))
            _quantize(os.path.join(workdir, "fused.onnx"), os.path.join(workdir, "fused_int8.onnx"))
            runners["fused int8"] = _session(os.path.join(workdir, "fused_int8.onnx"))
            fusions = {name: count for name, count in statistics.items() if count}
            print(f"  ONNX Runtime fused graph: {fusions}")
        except Exception as error:  # noqa: BLE001 - a peer that cannot be built is reported, not fatal
            print(f"  (ONNX Runtime fused graph not built: {type(error).__name__}: {str(error).splitlines()[0][:200]})")
    print(f"  exported and quantised for ONNX Runtime in {time.perf_counter() - start:.0f}s")
    return runners


def ctranslate2_runner(stock: XLMRobertaModel, workdir: str) -> Callable | None:
    """CTranslate2's int8 encoder, converted from stock's weights (its XLM-R loader reads a sequence classifier's
    `roberta`, and the real vocabulary's tokenizer for the vocabulary)."""
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ImportError:
        print("  (ctranslate2 not installed: pip install ctranslate2)")
        return None
    try:
        from tests.support.corpus import real_tokenizer_json_path
        from tests.support.models import fast_stock_tokenizer

        tokenizer = fast_stock_tokenizer(real_tokenizer_json_path())
    except (ImportError, RuntimeError) as error:
        print(f"  (CTranslate2 needs the real vocabulary of the test extra: {error})")
        return None
    start = time.perf_counter()
    config = copy.deepcopy(stock.config)
    config.position_embedding_type = "absolute"  # CTranslate2 4.x reads this transformers 4 attribute
    classifier = XLMRobertaForSequenceClassification(config)
    classifier.roberta.load_state_dict(stock.state_dict(), strict=True)
    hf_dir, ct2_dir = os.path.join(workdir, "hf_for_ct2"), os.path.join(workdir, "ct2")
    classifier.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    try:
        TransformersConverter(hf_dir).convert(ct2_dir, quantization="int8")
    except Exception as error:  # noqa: BLE001 - the converter's own errors, whatever they are, are the report
        print(f"  (CTranslate2 cannot convert this model: {type(error).__name__}: {str(error).splitlines()[0][:200]})")
        return None
    print(f"  converted for CTranslate2 {ctranslate2.__version__} in {time.perf_counter() - start:.0f}s")
    try:
        return CTranslate2Process(ct2_dir, torch.get_num_threads())
    except (RuntimeError, EOFError, OSError) as error:  # the worker could not load the model, or died
        print(f"  (CTranslate2's worker process did not start: {type(error).__name__}: {error})")
        return None


class CTranslate2Process:
    """CTranslate2's int8 encoder in a process of its own, run_batch-compatible, timing its own passes and calls.

    Once CTranslate2 has run in a process, torch's small parallel ops there stay slower, for seconds on end (its
    bundled OpenMP runtime; measured on a Zen 4 in alternating fresh processes: ours int8 at 48 tokens 22-31 ms
    before it ran, 35-45 ms after; a GELU over 48 x 3,072 46 -> 107 us), while torch having run leaves
    CTranslate2 as fast. So it never runs in the benchmark's process. It times itself (`timed_pass`,
    `timed_calls`), so the round trips to it are not in its figures, and its rows are interleaved with the
    others' as before."""

    def __init__(self, model_dir: str, threads: int):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch, no OpenMP runtime of torch's
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_ctranslate2_worker, args=(child, model_dir, threads), daemon=True)
        self._process.start()
        child.close()
        self._ask("ready")

    def _ask(self, *request):
        self._connection.send(request)
        status, answer = self._connection.recv()
        if status != "ok":
            raise RuntimeError(f"CTranslate2 worker: {answer}")
        return answer

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.timed_pass([(input_ids, attention_mask)])[1][0]

    def timed_pass(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, list[torch.Tensor]]:
        """Seconds for one pass over all batches, timed in the worker, and each batch's states (padded like it)."""
        seconds, outputs = self._ask("run", [_rows(ids, mask) for ids, mask in batches], 0)
        return seconds, [
            torch.nn.functional.pad(torch.from_numpy(hidden), (0, 0, 0, ids.shape[1] - hidden.shape[1]))
            for (ids, _), hidden in zip(batches, outputs)
        ]

    def timed_calls(self, input_ids: torch.Tensor, repeats: int) -> list[float]:
        """Seconds of each of `repeats` calls on one sequence (after three untimed ones), timed in the worker."""
        return self._ask("run", [_rows(input_ids, torch.ones_like(input_ids))], repeats)

    def close(self) -> None:
        if self._process.is_alive():
            self._connection.send(("stop",))
            self._process.join(timeout=10)


def _rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]


def _ctranslate2_worker(connection, model_dir: str, threads: int) -> None:
    """The worker's loop: ("run", batches, repeats) runs the batches once, timed as a whole, and answers (seconds,
    states), or with repeats > 0 calls the first batch that often (after three untimed calls) and answers the
    seconds of each call; ("stop",) ends it."""
    import ctranslate2

    # glibc's malloc serves blocks above its mmap threshold with fresh pages, faulted in one by one; the threshold
    # rises to the size of the largest block the process has freed. Freeing one of 31 MB, as the benchmark's process
    # does (fast_path._raise_heap_thresholds), gives CTranslate2 the same allocator it has there.
    bytearray(31 << 20)
    try:
        encoder = ctranslate2.Encoder(model_dir, device="cpu", compute_type="int8", intra_threads=threads)
    except Exception as error:  # noqa: BLE001 - reported to the benchmark, which stops with it
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        request = connection.recv()
        if request[0] == "stop":
            return
        if request[0] == "ready":
            connection.send(("ok", None))
            continue
        _, batches, repeats = request
        try:
            if repeats:
                for _ in range(3):
                    encoder.forward_batch(batches[0])
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    encoder.forward_batch(batches[0])
                    times.append(time.perf_counter() - start)
                connection.send(("ok", times))
                continue
            start = time.perf_counter()
            outputs = [np.asarray(encoder.forward_batch(rows).last_hidden_state) for rows in batches]
            connection.send(("ok", (time.perf_counter() - start, outputs)))
        except Exception as error:  # noqa: BLE001 - reported to the benchmark, which stops with it
            connection.send(("error", f"{type(error).__name__}: {error}"))


__all__ = ["CTranslate2Process", "ctranslate2_runner", "onnx_runners"]
