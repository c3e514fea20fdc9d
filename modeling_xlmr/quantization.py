"""int8 inference for the packed encoder's projections, on CPU through oneDNN (torch's x86 int8 kernels).

* Weights: int8, symmetric, one scale per output channel, quantised once from the float weights into the
  prepared-weights cache of `fast_path` (never into the state dict: saved weights stay fp32/bf16, and the
  cache is rebuilt from them whenever they change, like the float one).
* Activations: quantised per token on every call (dynamic: no calibration data), symmetric, as uint8 with a
  fixed zero point; the GEMM accumulates in int32 and returns fp32 with the weight scales applied.
* oneDNN takes one activation scale per tensor, so the per-token scale, the bias, GELU and the residual add
  are applied on the fp32 output (one fused multiply-add, then GELU or the residual in place). A per-tensor
  scale would let oneDNN fuse them, but one outlier token then costs every token its precision.
* Without VNNI (AVX2 or AVX-512 without VNNI, e.g. Zen 3, Skylake) the kernels multiply uint8 by int8
  pairs into int16 (vpmaddubsw), which saturates for 8-bit activations against 8-bit weights: there the
  activations take 7 bits (fbgemm's `reduce_range`). With VNNI or AMX they take all 8.

* Few rows (a batch of one, a short query: up to `SMALL_ROWS`) are bound by reading the weights, where oneDNN's
  int8 GEMM is slow without VNNI (measured on a Zen 3: slower than its fp32 GEMM). There fbgemm's dynamic int8
  GEMM (torch's x86 quantized engine; the same int8 weights, prepacked on first use) is the default there: it
  measured faster at every shape up to 48 rows on a Zen 3 (4x), a Zen 4 and a Zen 5 (1.2-3x; 1.16x the feed-forward
  at 48 rows). oneDNN is timed against it once per shape and row range and takes over only where clearly faster
  (AMX may be such a case). fbgemm quantises the activations with one scale for all rows, which for so few rows
  is one scale per text.

LayerNorm, softmax and attention stay in the model's float dtype. Which projections run int8 is set per
layer (`set_int8_projections`): trained transformers hide activation outliers in the feed-forward down
projection, which can be kept in float.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
import warnings

import torch
from torch import nn

# The projections of a layer as the fast path prepares them (query, key and value are one fused GEMM).
PROJECTIONS = ("qkv", "attention_output", "ffn_up", "ffn_down")
_WEIGHT_LEVELS = 127
SMALL_ROWS = 64
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_unavailable_reason(device: torch.device | str) -> str | None:
    """Why int8 inference cannot run on `device` here, or None when it can."""
    device = torch.device(device)
    if device.type != "cpu":
        return (
            f"int8 inference runs on CPU only (oneDNN int8 kernels) and the model is on {device}; "
            "use dtype='bf16' or 'fp16' on GPUs"
        )
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return f"int8 inference needs an x86 CPU (oneDNN's x86 int8 kernels); this one is {platform.machine()}"
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")):
        return "this torch build has no oneDNN int8 kernels (torch.ops.onednn.qlinear_pointwise); use dtype='fp32'"
    return None


def int8_usable(weight: torch.Tensor) -> bool:
    """The int8 kernels can run this weight now (CPU, oneDNN present and enabled)."""
    return torch.backends.mkldnn.enabled and int8_unavailable_reason(weight.device) is None


@functools.cache
def activation_levels() -> int:
    """Largest quantised activation magnitude: 127 with VNNI/AMX, 63 (7 bits) where u8 x s8 pairs saturate int16."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())
    except OSError:
        pass
    vnni = any(flag in flags for flag in _VNNI_FLAGS) or torch.cpu._is_vnni_supported()
    return 127 if vnni else 63


def set_int8_projections(layers: nn.ModuleList, exclude: tuple[str, ...] | list[str] = ()) -> None:
    """Marks each layer's projections for int8 (`layer.int8_projections`), all but those `exclude` names.

    `exclude` entries: a projection name for every layer ("ffn_down"), a layer ("layer.3"), or one
    projection of one layer ("layer.3.ffn_down"). The mark is a plain attribute, not state: saving the
    model saves float weights and no int8 setting.
    """
    excluded = {_parse_exclusion(entry, len(layers)) for entry in exclude}
    for index, layer in enumerate(layers):
        layer.int8_projections = frozenset(
            name
            for name in PROJECTIONS
            if (None, name) not in excluded and (index, None) not in excluded and (index, name) not in excluded
        )


def runs_int8(layers: nn.ModuleList) -> bool:
    """Whether any of `layers` has projections marked for int8 (`set_int8_projections`)."""
    return any(getattr(layer, "int8_projections", None) for layer in layers)


def _parse_exclusion(entry: str, num_layers: int) -> tuple[int | None, str | None]:
    parts = str(entry).split(".")
    if len(parts) == 1 and parts[0] in PROJECTIONS:
        return None, parts[0]
    if parts[0] == "layer" and len(parts) in (2, 3) and parts[1].isdigit() and int(parts[1]) < num_layers:
        if len(parts) == 2:
            return int(parts[1]), None
        if parts[2] in PROJECTIONS:
            return int(parts[1]), parts[2]
    raise ValueError(
        f"cannot exclude {entry!r} from int8: name a projection ({', '.join(PROJECTIONS)}), a layer "
        f"('layer.0' .. 'layer.{num_layers - 1}') or both ('layer.3.ffn_down')."
    )


class Int8Linear:
    """`nn.Linear`s sharing an input (fused along their outputs, like `fast_path.PreparedLinear`) as one
    oneDNN int8 GEMM with per-channel int8 weights and per-token dynamic activations."""

    onednn = True  # rows are bucketed like oneDNN's float GEMMs (its int8 kernels are also built per shape)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows_hint: int):
        weight = weight.detach().float()
        self.shape = tuple(weight.shape)
        scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / _WEIGHT_LEVELS
        quantized = torch.round(weight / scale[:, None]).clamp_(-_WEIGHT_LEVELS, _WEIGHT_LEVELS).to(torch.int8)
        self.weight = torch.ops.onednn.qlinear_prepack(quantized, [rows_hint, weight.shape[1]])
        self._quantized_weight, self._fbgemm_weight = quantized, None
        self.weight_scale = scale
        self.weight_zero_point = torch.zeros(weight.shape[0], dtype=torch.long)
        self.bias = None if bias is None else bias.detach().float()
        self.levels = activation_levels()
        self.zero_point = self.levels + 1  # uint8 codes 1 .. 2 * levels + 1
        # Rounding by adding 1.5 * 2**23: for |v| < 2**22 the float sum is 1.5 * 2**23 + round(v) exactly (round
        # half to even), so its int32 bits end in the code's byte, and int32 -> uint8 keeps that byte. Measured on
        # a Zen 5, one (1, K) addcmul plus that conversion takes 0.27 ms for 1,136 x 3,072 against 1.19 ms for
        # adding 0.5 through a 0-dim tensor (addcmul broadcasts a 0-dim or (M, 1) addend ~4x slower than a row)
        # and converting float -> uint8. The row is kept per input width.
        self._rounding_row = torch.full((1, self.shape[1]), 1.5 * 2**23 + self.zero_point)

    def quantize_activations(self, inputs: torch.Tensor, scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, in) floats -> uint8 codes round(x / s) + zero point, and the (tokens, 1) fp32 scales s.
        `scratch`: the caller no longer needs `inputs`, whose memory then takes the rounding step (for the
        feed-forward's 3,072-wide intermediate, one buffer of 12 KB per token less to allocate and fill)."""
        rows = inputs.float()
        # max |x| per token as the larger of max and -min: two vectorized reductions, ~9x faster on CPU than
        # `linalg.vector_norm(ord=inf)` (14 % of an int8 forward when used here) or `aminmax`; NaN propagates
        amax = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_())
        token_scale = amax.clamp_min_(torch.finfo(torch.float32).tiny) / self.levels
        out = rows if scratch and rows.is_contiguous() else None
        codes = torch.addcmul(self._rounding_row, rows, token_scale.reciprocal(), out=out)  # see `_rounding_row`
        return codes.view(torch.int32).to(torch.uint8), token_scale

    def _gemm(self, inputs: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """(inputs @ W^T) in fp32, per-token scale and bias applied."""
        codes, token_scale = self.quantize_activations(inputs, scratch)
        outputs = torch.ops.onednn.qlinear_pointwise.default(
            codes, 1.0, self.zero_point, self.weight, self.weight_scale, self.weight_zero_point,
            None, 1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip
        if self.bias is None:
            return outputs.mul_(token_scale)
        return torch.addcmul(self.bias, outputs, token_scale, out=outputs)

    def _gemm_few_rows(self, inputs: torch.Tensor) -> torch.Tensor:
        """(inputs @ W^T + bias) in fp32 by fbgemm, one activation scale for all rows."""
        if self._fbgemm_weight is None:
            zero_points = torch.zeros(self.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # torch deprecates quantized tensors; this one lives only to be packed
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                weight = torch._make_per_channel_quantized_tensor(
                    self._quantized_weight, self.weight_scale.double(), zero_points, 0
                )
            with _quantized_engine("fbgemm"):  # the packed weight keeps the engine it was packed by
                self._fbgemm_weight = torch.ops.quantized.linear_prepack(weight, self.bias)
        inputs = inputs.float().contiguous()
        return torch.ops.quantized.linear_dynamic.default(inputs, self._fbgemm_weight, self.levels < 127)

    def _outputs(self, inputs: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        rows = inputs.shape[0]
        if rows > SMALL_ROWS or not _fbgemm_available():
            return self._gemm(inputs, scratch)
        key = (self.shape, -(-rows // _CHOICE_ROWS))  # neighbouring counts share one measurement
        use_onednn = _FEW_ROWS_CHOICE.get(key)
        if use_onednn is None:  # fbgemm unless oneDNN is clearly faster: a near tie, decided by noise, keeps fbgemm
            use_onednn = _FEW_ROWS_CHOICE[key] = _faster(self._gemm, self._gemm_few_rows, inputs)
        return self._gemm(inputs) if use_onednn else self._gemm_few_rows(inputs)

    def __call__(self, inputs: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        outputs = self._outputs(inputs)
        if gelu:
            outputs = torch.ops.aten.gelu_.default(outputs)
        return outputs.to(inputs.dtype)

    def add(self, inputs: torch.Tensor, residual: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """inputs @ W^T + b + residual; `scratch` as in `quantize_activations`."""
        return self._outputs(inputs, scratch).add_(residual).to(residual.dtype)


# (weight shape, rows // _CHOICE_ROWS rounded up) -> whether oneDNN's GEMM measured clearly faster than fbgemm's.
# Few rows run at their own count (`fast_path.bucketed_rows`); the faster backend does not change from one count
# to the next, and each measurement costs a dozen GEMM calls on first use.
_FEW_ROWS_CHOICE: dict[tuple, bool] = {}
_CHOICE_ROWS = 16


def _faster(candidate, incumbent, inputs: torch.Tensor) -> bool:
    """Whether `candidate(inputs)` runs clearly faster than `incumbent(inputs)`: best of six interleaved calls each
    (the first ones build the kernels, so they are never the best). Decided once per shape, during a model's first
    forward, when the weights are cold and the process may still be settling: with four calls a Zen 4 once kept
    oneDNN for the fused QKV at 12 rows (135 us a call against fbgemm's 92)."""
    timings = {candidate: float("inf"), incumbent: float("inf")}
    for _ in range(6):
        for gemm in (candidate, incumbent):
            start = time.perf_counter()
            gemm(inputs)
            timings[gemm] = min(timings[gemm], time.perf_counter() - start)
    return timings[candidate] < 0.9 * timings[incumbent]


@functools.cache
def _fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")


@contextlib.contextmanager
def _quantized_engine(engine: str):
    saved = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = saved


__all__ = [
    "PROJECTIONS",
    "Int8Linear",
    "activation_levels",
    "int8_unavailable_reason",
    "runs_int8",
    "set_int8_projections",
]
