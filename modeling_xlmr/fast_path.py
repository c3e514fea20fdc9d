"""Inference-only kernels for the packed encoder (eval mode, no autograd).

Every layer's weights are prepared once, on the first packed forward that needs them, into:

* one fused query/key/value projection (a single GEMM with 3x the columns instead of three);
* on CPU (fp32 and bf16), oneDNN's prepacked ("reordered") weight layout, so each call skips the
  weight reorder, uses AMX for bf16 where the CPU has it, and fuses the epilogues into the GEMM: GELU
  after the feed-forward up projection, the residual add after both down projections;
* or, for the projections a layer marks int8 (`quantization.set_int8_projections`), oneDNN int8 GEMMs.

The prepared weights are a derived cache, never parameters: `state_dict()` and saved weight names
are untouched, and they are rebuilt whenever a source parameter changes (its storage, version
counter, dtype or device), e.g. after `load_state_dict`, an optimizer step or `model.to(...)`.
They hold one extra copy of the encoder weights; `clear_inference_cache(model)` frees it.
"""

from __future__ import annotations

import functools
import time
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .packing import PackedBatch, packed_qkv_attention
from .quantization import SMALL_ROWS, Int8Linear, int8_usable

# oneDNN's prepacked layout is tuned for a row count; any count works, this one is a typical packed batch.
_ROWS_HINT = 1024
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def prepared_for_inference(
    layer: nn.Module, hidden_states: torch.Tensor, packed: PackedBatch | None
) -> PreparedLayer | None:
    """The layer's prepared weights where its packed forward can run on them, else None (its modules run).

    The prepared kernels serve packed inference only (training and autograd keep plain modules), and only where
    they compute exactly what the layer's modules would (`exact_projections`). Under autocast (Trainer's
    `bf16=True` evaluation) each module picks its own dtype, which prepared weights cannot follow, so the
    layer's modules run instead. Asked of every layer on every call: plain attribute reads, the projections
    looked up once for both the check and the fingerprint."""
    if (
        packed is None
        or layer.training
        or torch.is_grad_enabled()
        or torch.is_autocast_enabled(hidden_states.device.type)
    ):
        return None
    projections = exact_projections(layer)
    return None if projections is None else prepared_layer(layer, projections)


def exact_projections(layer: nn.Module) -> tuple | None:
    """The layer's six projections when prepared weights compute exactly what they do, else None.

    Prepared weights read each projection's `weight` and `bias` directly, bypassing the module's call.
    That is its real computation only for a plain `nn.Linear` whose tensors are really there: not a
    wrapped or replaced linear (PEFT/LoRA adapters, quantized or custom layers), not one with hooks or
    parametrizations, not weights that Accelerate offloads or keeps on the meta device. Anything else
    runs the layer's own modules on the packed tokens."""
    if _has_hooks(layer):
        return None
    projections = _projections(layer)
    for linear in projections:
        # a parametrized linear (torch.nn.utils.parametrize) is given its own class, ParametrizedLinear; a
        # weight that is no longer a registered parameter (pruning's recomputed one) is not what is prepared
        if type(linear) is not nn.Linear or _has_hooks(linear):
            return None
        weight = linear._parameters.get("weight")
        if weight is None or weight.is_meta:
            return None
    return projections


def _projections(layer: nn.Module) -> tuple:
    # Read from `_modules` (where nn.Module keeps submodules) rather than through `nn.Module.__getattr__`:
    # the same modules, looked up for every layer on every call, at a fraction of the cost.
    modules = layer._modules
    attention = modules["attention"]._modules
    projections = attention["self"]._modules
    return (
        projections["query"],
        projections["key"],
        projections["value"],
        attention["output"]._modules["dense"],
        modules["intermediate"]._modules["dense"],
        modules["output"]._modules["dense"],
    )


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module.__dict__.get("_hf_hook") is not None  # Accelerate's device placement / offloading
        or module._forward_hooks
        or module._forward_pre_hooks
    )


def _onednn_usable(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype in _ONEDNN_DTYPES
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        # oneDNN's bf16 kernels need AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT; on an AVX2-only CPU they refuse to run
        and (weight.dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


class PreparedLinear:
    """One or more `nn.Linear`s sharing an input, fused along their outputs and laid out for the fastest GEMM."""

    def __init__(self, linears: list[nn.Linear]):
        # A single Linear keeps its own tensors (no copy) unless oneDNN reorders them below.
        weight = torch.cat([linear.weight.detach() for linear in linears]) if len(linears) > 1 else linears[0].weight
        biases = [linear.bias for linear in linears]
        if any(b is None for b in biases):
            self.bias = None
        else:
            self.bias = torch.cat([b.detach() for b in biases]) if len(biases) > 1 else biases[0].detach()
        weight = weight.detach()
        self.shape = tuple(weight.shape)
        self.onednn = _onednn_usable(weight)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, _ROWS_HINT) if self.onednn else weight

    def __call__(self, inputs: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """inputs @ W^T + b, optionally followed by exact (erf) GELU."""
        if self.onednn:
            epilogue = ("gelu", [], "none") if gelu else ("none", [], "")
            gemm = torch.ops.mkldnn._linear_pointwise.default  # an overload: the packet's dispatch checks cost ~2 us
            return self._in_row_chunks(lambda rows: gemm(rows, self.weight, self.bias, *epilogue), inputs, epilogue[0])
        outputs = F.linear(inputs, self.weight, self.bias)
        return F.gelu(outputs) if gelu else outputs

    def add(self, inputs: torch.Tensor, residual: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """inputs @ W^T + b + residual, the residual added inside the GEMM's epilogue on CPU (`scratch`: see
        `Int8Linear.quantize_activations`; float GEMMs need no scratch)."""
        if self.onednn:
            gemm = torch.ops.mkldnn._linear_pointwise.binary
            return self._in_row_chunks(
                lambda rows, residual_rows: gemm(rows, residual_rows, self.weight, self.bias, "add"),
                inputs, "add", residual,
            )  # fmt: skip
        return F.linear(inputs, self.weight, self.bias).add_(residual)

    def _in_row_chunks(self, gemm, inputs: torch.Tensor, epilogue: str, *row_aligned: torch.Tensor) -> torch.Tensor:
        """`gemm` over all rows at once, or chunk by chunk where that measured faster for this shape."""
        if inputs.shape[0] < 2 * _CHUNK_ROWS:  # too few rows for two chunks: nothing to choose
            return gemm(inputs, *row_aligned)
        key = (self.shape, inputs.dtype, epilogue, inputs.shape[0] // _CHOICE_GRANULARITY)
        chunk_rows = _CHUNK_CHOICE.get(key)
        if chunk_rows is None:
            chunk_rows = _CHUNK_CHOICE[key] = _fastest_chunking(gemm, inputs, row_aligned)
        return _run_in_chunks(gemm, inputs, row_aligned, chunk_rows)


# oneDNN's GEMMs on few cores have row counts where they run at half speed (measured on a 2-core AVX-512/AMX
# Xeon, bf16, 768 output columns: ~1,000 GFLOP/s for 512-1,280 rows, ~2,000 above and below; likely a thread
# split that leaves one core idle). Which counts depends on the CPU and oneDNN version, so each (shape, dtype,
# epilogue, rows) is timed once, whole against in chunks of `_CHUNK_ROWS`, and the faster is kept.
_CHUNK_ROWS = 384
_CHOICE_GRANULARITY = 128  # row counts this close share one measurement
_CHUNK_CHOICE: dict[tuple, int] = {}


def _run_in_chunks(gemm, inputs: torch.Tensor, row_aligned: tuple, chunk_rows: int) -> torch.Tensor:
    if not chunk_rows or inputs.shape[0] <= chunk_rows:
        return gemm(inputs, *row_aligned)
    return torch.cat([
        gemm(inputs[start : start + chunk_rows], *(t[start : start + chunk_rows] for t in row_aligned))
        for start in range(0, inputs.shape[0], chunk_rows)
    ])  # fmt: skip


def _fastest_chunking(gemm, inputs: torch.Tensor, row_aligned: tuple) -> int:
    candidates = (0, _CHUNK_ROWS)
    for chunk_rows in candidates:  # the first call of each builds oneDNN's kernels
        _run_in_chunks(gemm, inputs, row_aligned, chunk_rows)
    timings = dict.fromkeys(candidates, float("inf"))
    for _ in range(3):  # interleaved, best of three: load changes hit both alike
        for chunk_rows in candidates:
            start = time.perf_counter()
            _run_in_chunks(gemm, inputs, row_aligned, chunk_rows)
            timings[chunk_rows] = min(timings[chunk_rows], time.perf_counter() - start)
    # Chunks only when clearly faster: a near tie keeps the single GEMM.
    return _CHUNK_ROWS if timings[_CHUNK_ROWS] < 0.8 * timings[0] else 0


@dataclass
class PreparedLayer:
    fingerprint: tuple
    qkv: PreparedLinear | Int8Linear
    attention_output: PreparedLinear | Int8Linear
    ffn_up: PreparedLinear | Int8Linear
    ffn_down: PreparedLinear | Int8Linear
    # read from the layer when prepared, as its modules were built: not looked up again on every call
    num_heads: int
    scaling: float
    exact_gelu: bool  # the activation is exact (erf) GELU, which the up projection's epilogue applies


_PREPARED: weakref.WeakKeyDictionary[nn.Module, PreparedLayer] = weakref.WeakKeyDictionary()


def _fingerprint(projections: tuple) -> tuple:
    # The projections' tensors are all that is prepared (LayerNorms run as they are). `_version` moves on
    # most in-place writes (load_state_dict's copy_, plain optimizer steps); data_ptr, dtype and device
    # move when parameters are replaced (`.to()`, `.data = ...`, a new Parameter or module). Fused
    # optimizers (torch's fused AdamW, Trainer's default) update weights without moving `_version`:
    # gradients are the signal there (`_forget_when_trained`). Parameters created under inference_mode
    # have no version counter: only replacing them is seen. Read per layer on every call, from each
    # linear's `_parameters` (its weight and bias; `nn.Module.__getattr__` per tensor costs 5x the reads).
    return tuple(
        None
        if tensor is None
        else (tensor.data_ptr(), -1 if tensor.is_inference() else tensor._version, tensor.dtype, tensor.device)
        for linear in projections
        for tensor in linear._parameters.values()
    )


def prepared_layer(layer: nn.Module, projections: tuple) -> PreparedLayer:
    """The layer's prepared weights (`projections`: its `_projections`), made again whenever a source tensor, the
    int8 choice or oneDNN's switch changed."""
    # `int8_projections` (quantization.set_int8_projections) names the projections that run int8; read from the
    # instance's dict, where a plain attribute lives (a missing one would cost `nn.Module.__getattr__`'s raise)
    int8 = layer.__dict__.get("int8_projections", frozenset())
    fingerprint = (_fingerprint(projections), torch.backends.mkldnn.enabled, int8)
    prepared = _PREPARED.get(layer)
    if prepared is None or prepared.fingerprint != fingerprint:
        query, key, value, attention_output, ffn_up, ffn_down = projections
        attention = layer.attention.self
        with torch.no_grad():
            prepared = PreparedLayer(
                fingerprint=fingerprint,
                qkv=_prepare([query, key, value], "qkv" in int8),
                attention_output=_prepare([attention_output], "attention_output" in int8),
                ffn_up=_prepare([ffn_up], "ffn_up" in int8),
                ffn_down=_prepare([ffn_down], "ffn_down" in int8),
                num_heads=attention.num_attention_heads,
                scaling=attention.scaling,
                exact_gelu=attention.config.hidden_act == "gelu",
            )
        _PREPARED[layer] = prepared
        _forget_when_trained(layer)
    return prepared


def _prepare(linears: list[nn.Linear], int8: bool) -> PreparedLinear | Int8Linear:
    if not (int8 and int8_usable(linears[0].weight)):  # int8 steps aside off CPU or with oneDNN turned off
        return PreparedLinear(linears)
    biases = [linear.bias for linear in linears]
    bias = None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])
    return Int8Linear(torch.cat([linear.weight.detach() for linear in linears]), bias, _ROWS_HINT)


def _forget_when_trained(layer: nn.Module) -> None:
    """A gradient on any of the layer's parameters drops its prepared weights: an optimizer step may
    follow, and fused optimizers take it without a trace in the fingerprint."""
    layer_ref = weakref.ref(layer)

    def forget(_parameter: torch.Tensor) -> None:
        watched = layer_ref()
        if watched is not None:
            _PREPARED.pop(watched, None)

    hooked = _HOOKED.setdefault(layer, set())
    for parameter in layer.parameters():
        if parameter.requires_grad and id(parameter) not in hooked:
            parameter.register_post_accumulate_grad_hook(forget)
            hooked.add(id(parameter))


# The parameters (by id) of each layer that already carry `_forget_when_trained`'s hook.
_HOOKED: weakref.WeakKeyDictionary[nn.Module, set[int]] = weakref.WeakKeyDictionary()


def clear_inference_cache(model: nn.Module) -> None:
    """Frees the prepared weights of every layer of `model` (they are rebuilt on the next packed forward)."""
    for module in model.modules():
        _PREPARED.pop(module, None)


@functools.cache
def _raise_heap_thresholds() -> None:
    """glibc's malloc serves blocks above its mmap threshold with fresh pages (faulted in one by one, unmapped on
    free), and hands the top of its heap back to the system once more than twice that threshold lies free there.
    The threshold starts at 128 KB and rises to the size of each larger block the process frees, up to 32 MB.
    A layer's transients are tens of MB: below the ceiling, each layer can grow the heap past the trim point and
    the next layer faults the same pages in again (measured on a 2-core Zen 5, xlmr.base int8, batches of 32:
    ~690,000 page faults and 1.06 s of kernel time per 6,808-token pass, 3,750 tokens/s; with this, under
    35,000 faults and ~5,500 tokens/s). Freeing one block just under the ceiling takes glibc there at once, as
    any process that freed such a tensor would; no setting is changed, and other allocators ignore it."""
    torch.empty(31 << 20, dtype=torch.uint8)


def bucketed_rows(num_rows: int) -> int:
    """`num_rows` itself up to `quantization.SMALL_ROWS`, above that rounded up to a multiple of 16 or of 1/16 of its
    power of two, whichever is larger.

    oneDNN builds (JIT-compiles) a kernel per GEMM shape and caches it; every packed batch has a new
    token count, and building costs several times the bf16 GEMM itself, so rows are padded to a
    bucket and the shapes repeat. A few rows (a query, one short text) are bound by reading the weights,
    where the padded rows are not free: measured on a 2-core Zen 4, xlmr.base's 48 GEMMs at 12 rows
    against 16: fp32 oneDNN 15.4 / 17.6 ms, bf16 8.8 / 10.2 ms, int8 fbgemm 5.3 / 7.9 ms; while a new
    small row count's kernels (4 shapes) cost ~2-4 ms once. So those run at their own count (64 more shapes).
    """
    if num_rows <= SMALL_ROWS:  # the few rows that read the weights more than they compute
        return num_rows
    step = max(16, 1 << max(num_rows.bit_length() - 5, 0))
    return -(-num_rows // step) * step


def fast_layer_forward(
    layer: nn.Module, hidden_states: torch.Tensor, packed: PackedBatch, prepared: PreparedLayer
) -> torch.Tensor:
    """One post-LN transformer layer on packed (tokens, hidden) states, same math as `XLMRLayer.forward`
    (`prepared`: the layer's prepared weights, from `prepared_for_inference`)."""
    num_tokens = hidden_states.shape[0]
    if num_tokens == 0:
        return hidden_states
    if hidden_states.device.type == "cpu":
        _raise_heap_thresholds()
    extra_rows = bucketed_rows(num_tokens) - num_tokens if prepared.qkv.onednn else 0
    if extra_rows:  # zero rows: every op is row-wise except attention, which only sees real tokens
        hidden_states = F.pad(hidden_states, (0, 0, 0, extra_rows))
    qkv = prepared.qkv(hidden_states)
    context = packed_qkv_attention(
        qkv[:num_tokens] if extra_rows else qkv, packed, prepared.num_heads, prepared.scaling
    )
    if extra_rows:
        context = F.pad(context, (0, 0, 0, extra_rows))
    modules = layer._modules  # the same modules as `layer.output` etc., without `nn.Module.__getattr__`
    # `context` and (below) `intermediate` are dead after their projection: an int8 one may quantize them in place
    attention_output = prepared.attention_output.add(context, hidden_states, scratch=True)
    hidden_states = _layer_norm(modules["attention"]._modules["output"]._modules["LayerNorm"], attention_output)
    if prepared.exact_gelu:  # the one oneDNN fuses
        intermediate = prepared.ffn_up(hidden_states, gelu=True)
    else:
        intermediate = modules["intermediate"].intermediate_act_fn(prepared.ffn_up(hidden_states))
    output = prepared.ffn_down.add(intermediate, hidden_states, scratch=True)
    output = _layer_norm(modules["output"]._modules["LayerNorm"], output)
    return output[:num_tokens] if extra_rows else output


def _layer_norm(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """`module(inputs)`; for a plain `nn.LayerNorm` without hooks, its own function called directly (on a few rows
    the module call costs as much as the op: 11 against 6 us at 12 rows of 768)."""
    if type(module) is not nn.LayerNorm or _has_hooks(module):
        return module(inputs)
    parameters = module._parameters
    return torch.layer_norm(inputs, module.normalized_shape, parameters["weight"], parameters["bias"], module.eps)
