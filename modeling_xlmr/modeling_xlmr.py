"""XLM-R (fairseq's XLM-RoBERTa) for Transformers.

Parameter names are exactly those of `transformers.XLMRoberta*`, so state dicts move between these
classes and stock transformers with no renaming. What this file adds over stock:

* a packed encoder path, on by default for inference wherever it is exact
  (``unpad_inputs`` per call or in the config: None = automatic, True = always, False = never): padding is
  removed once before the first layer and restored once after the last, so projections,
  LayerNorms and the feed-forward only ever see real tokens;
* fairseq's position ids for ``inputs_embeds`` too (from the attention mask, not a blind arange);
* clear errors instead of index errors for over-long inputs and bad token type ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN, gelu
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.generic import can_return_tuple

from .configuration_xlmr import AUTO_MAP, XLMRConfig, copy_remote_code
from .fast_path import clear_inference_cache, fast_layer_forward, prepared_for_inference
from .packing import PackedBatch, is_tracing, packed_attention
from .quantization import int8_unavailable_reason, set_int8_projections

# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


def position_ids_from_mask(mask: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq's `make_positions`: real tokens count up from padding_idx + 1, pads stay at padding_idx.

    Counting only real tokens makes left- and right-padded copies of a sentence read the same rows.
    """
    mask = mask.int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class XLMREmbeddings(nn.Module):
    """Word + token-type + position embeddings, then LayerNorm and dropout (fairseq's post-LN input)."""

    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        # Not snake-cased, to keep transformers' (originally TensorFlow's) parameter names.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.padding_idx = config.pad_token_id
        self.max_sequence_length = config.max_sequence_length

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, attention_mask, inputs_embeds)
        self._check_positions(position_ids)

        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:  # type 0 everywhere; called as a module so offloading hooks load its weight
            first_type = torch.zeros((1, 1), dtype=torch.long, device=inputs_embeds.device)
            token_type_embeddings = self.token_type_embeddings(first_type)
        else:
            self._check_token_types(token_type_ids)
            token_type_embeddings = self.token_type_embeddings(token_type_ids)
        embeddings = inputs_embeds + token_type_embeddings
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))

    def default_position_ids(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        if input_ids is not None:
            real_tokens = input_ids.ne(self.padding_idx)
        elif attention_mask is not None:
            real_tokens = attention_mask.bool()
        else:
            real_tokens = torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
        return position_ids_from_mask(real_tokens, self.padding_idx)

    def _check_positions(self, position_ids: torch.Tensor) -> None:
        # torch would fail with an opaque "index out of range in self" (or a CUDA device assert). A trace or
        # an export cannot read a value out of the data, so it goes without the check.
        if is_tracing():
            return
        highest = int(position_ids.max()) if position_ids.numel() else 0
        if highest >= self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Input has {highest - self.padding_idx} tokens in one sequence, but XLM-R accepts at most "
                f"{self.max_sequence_length} (max_position_embeddings={self.position_embeddings.num_embeddings}, "
                f"positions start after padding index {self.padding_idx}). Truncate the input, e.g. "
                f"tokenizer(..., truncation=True, max_length={self.max_sequence_length})."
            )

    def _check_token_types(self, token_type_ids: torch.Tensor) -> None:
        type_vocab_size = self.token_type_embeddings.num_embeddings
        if not is_tracing() and token_type_ids.numel() and int(token_type_ids.max()) >= type_vocab_size:
            raise ValueError(
                f"token_type_ids contains {int(token_type_ids.max())}, but this model has type_vocab_size="
                f"{type_vocab_size}. XLM-R marks sentence pairs with </s></s>, not token types: pass "
                "token_type_ids=None (or all zeros)."
            )


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T * scaling + mask) V on (batch, heads, seq, head_dim); returns (batch, seq, heads, head_dim)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class XLMRSelfAttention(nn.Module):
    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # (..., hidden) -> (..., heads, head_dim); `...` is (batch, seq) padded or (tokens,) packed.
        head_shape = (*hidden_states.shape[:-1], self.num_attention_heads, self.attention_head_size)
        query = self.query(hidden_states).view(head_shape)
        key = self.key(hidden_states).view(head_shape)
        value = self.value(hidden_states).view(head_shape)
        dropout = self.dropout.p if self.training else 0.0

        if packed is not None:
            attn_output = packed_attention(query, key, value, packed, self.scaling, dropout)
            return attn_output.reshape(hidden_states.shape), None

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if output_attentions:
            attention_interface = eager_attention_forward  # only eager materializes the probabilities
        attn_output, attn_weights = attention_interface(
            self,
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            attention_mask,
            dropout=dropout,
            scaling=self.scaling,
        )
        return attn_output.reshape(hidden_states.shape), attn_weights


class XLMRSelfOutput(nn.Module):
    """Output projection, dropout, residual add and post-LayerNorm."""

    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class XLMRAttention(nn.Module):
    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.self = XLMRSelfAttention(config)
        self.output = XLMRSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, packed=None, output_attentions=False):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, packed, output_attentions)
        return self.output(attn_output, hidden_states), attn_weights


# ----------------------------------------------------------------------------------------------
# Feed-forward, layer, encoder
# ----------------------------------------------------------------------------------------------


class XLMRIntermediate(nn.Module):
    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class XLMROutput(XLMRSelfOutput):
    """Feed-forward down projection, dropout, residual add and post-LayerNorm."""

    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class XLMRLayer(GradientCheckpointingLayer):
    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.attention = XLMRAttention(config)
        self.intermediate = XLMRIntermediate(config)
        self.output = XLMROutput(config)

    def forward(self, hidden_states, attention_mask=None, packed=None, output_attentions=False):
        prepared = prepared_for_inference(self, hidden_states, packed)
        if prepared is not None:  # packed inference: fused, prepacked kernels (fast_path.py)
            return fast_layer_forward(self, hidden_states, packed, prepared), None
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, packed, output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attn_weights


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# On CPU, inference on a packed batch of more tokens than this runs the layers on slices of whole sequences of
# at most this many tokens (rows are independent everywhere but in attention, which never crosses a sequence).
# A layer's transients (the feed-forward's tokens x 3072 floats above all) then stay in the L3 cache, and below
# glibc's 32 MB ceiling for heap blocks (see `fast_path._raise_heap_thresholds`). Measured on a 2-core Zen 5,
# xlmr.base on 8,192-token batches (the inference engine's default), per 6,808-token pass: fp32 270,000 page
# faults and 2,306 tokens/s, int8 530,000 and 4,019; in slices of 2,048, fp32 21,000 and 2,475, int8 41,000 and
# 5,820 (1,024 and 2,048 measure alike; 3,072 crosses the 32 MB).
_SLICE_TOKENS = 2048


class XLMREncoder(nn.Module):
    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([XLMRLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """Runs the layers on padded (batch, seq, hidden) states, or on packed (tokens, hidden) ones when
        `packed` is given; every state comes back in the layout it went in."""
        if packed is not None and self._runs_in_slices(hidden_states, packed):
            runs = [
                self._run_layers(hidden_states[rows], None, run, False, output_hidden_states)
                for rows, run in packed.slices(_SLICE_TOKENS)
            ]
            return EncoderOutput(
                last_hidden_state=torch.cat([run.last_hidden_state for run in runs]),
                hidden_states=tuple(map(torch.cat, zip(*(run.hidden_states for run in runs))))
                if output_hidden_states
                else None,
            )
        return self._run_layers(hidden_states, attention_mask, packed, output_attentions, output_hidden_states)

    def _runs_in_slices(self, hidden_states: torch.Tensor, packed: PackedBatch) -> bool:
        return (
            packed.num_tokens > _SLICE_TOKENS
            and hidden_states.device.type == "cpu"
            and not self.training
            and not torch.is_grad_enabled()
        )

    def _run_layers(self, hidden_states, attention_mask, packed, output_attentions, output_hidden_states):
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layer:
            hidden_states, attn_weights = layer(
                hidden_states, attention_mask, packed=packed, output_attentions=output_attentions
            )
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(attn_weights)
        return EncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


class XLMRPooler(nn.Module):
    """tanh(dense(<s>)): transformers' pooler, used by multiple choice."""

    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


# ----------------------------------------------------------------------------------------------
# Pretrained base and the bare model
# ----------------------------------------------------------------------------------------------


class XLMRPreTrainedModel(PreTrainedModel):
    config_class = XLMRConfig
    config: XLMRConfig
    base_model_prefix = "roberta"
    supports_gradient_checkpointing = True
    _no_split_modules = ["XLMREmbeddings", "XLMRLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, XLMRLMHead):
            init.zeros_(module.bias)

    def train(self, mode: bool = True):
        # Training changes weights, and not always visibly (fused optimizers): prepared inference weights go.
        if mode:
            clear_inference_cache(self)
        return super().train(mode)

    def quantize_for_inference(self, exclude: Sequence[str] = ()) -> XLMRPreTrainedModel:
        """Runs the encoder's projections as int8 GEMMs wherever the fast path runs (inference on CPU); returns self.

        Weights are quantised per output channel into the fast path's cache, activations per token on each
        call (`quantization.py`); the parameters, the state dict and saved weights stay float, and
        training, autograd, wrapped linears and tracing run the float modules as before. `exclude` keeps
        projections in float: "ffn_down" (in every layer), "layer.3" or "layer.3.ffn_down"; calling
        again replaces the previous choice, and excluding all four projections turns int8 off.
        """
        reason = int8_unavailable_reason(self.device)
        if reason is not None:
            raise ValueError(f"{reason}.")
        set_int8_projections(self.base_model.encoder.layer, tuple(exclude))
        return self

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process:  # the whole remote-code set, whichever class was saved (configuration_xlmr.py)
            copy_remote_code(save_directory)


class XLMRModel(XLMRPreTrainedModel):
    """The bare XLM-R encoder; `pooler` (tanh over `<s>`) is optional like transformers', and by default
    present exactly when the config says the weights have one (`config.add_pooling_layer`)."""

    # The bare encoder of a repo saved with a head: the head's weights are there by design, not by mistake.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"^classifier\."]

    def __init__(self, config: XLMRConfig, add_pooling_layer: bool | None = None):
        super().__init__(config)
        if add_pooling_layer is None:
            add_pooling_layer = getattr(config, "add_pooling_layer", True)
        self.embeddings = XLMREmbeddings(config)
        self.encoder = XLMREncoder(config)
        self.pooler = XLMRPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        unpad_inputs: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        r"""
        unpad_inputs (`bool`, *optional*):
            Run the encoder on packed real tokens, padding removed before the first layer and restored after
            the last (real tokens get the padded path's numbers; pad positions come back as zeros). `None`
            (the default, from `config.unpad_inputs`) packs whenever that is exact: inference (eval mode,
            no autograd), padded or not (an unpadded batch then runs the prepared kernels of `fast_path.py`),
            not while tracing, exporting or compiling, not when attention maps are asked for. `True` always
            packs and raises where it cannot; `False` never packs.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_attentions = _config_default(output_attentions, self.config.output_attentions)
        output_hidden_states = _config_default(output_hidden_states, self.config.output_hidden_states)
        unpad_inputs = _config_default(unpad_inputs, self.config.unpad_inputs)

        packed = None
        if self._runs_packed(unpad_inputs, output_attentions):
            if attention_mask is None:  # every token is real (a batch of one, or equal lengths)
                reference = input_ids if input_ids is not None else inputs_embeds
                attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
            packed = PackedBatch.from_mask(attention_mask)
            encoder_input, layer_mask = self._packed_embeddings(
                packed, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds
            ), None
        else:
            encoder_input = self.embeddings(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
            layer_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=encoder_input, attention_mask=attention_mask
            )

        encoder_outputs = self.encoder(
            encoder_input,
            layer_mask,
            packed=packed,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = encoder_outputs.hidden_states
        if packed is None:
            sequence_output = encoder_outputs.last_hidden_state
        elif hidden_states is not None:  # padded back once each; the last one *is* the sequence output
            hidden_states = tuple(packed.pad(states) for states in hidden_states)
            sequence_output = hidden_states[-1]
        else:
            sequence_output = packed.pad(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=hidden_states,
            attentions=encoder_outputs.attentions,
        )

    def _runs_packed(self, unpad_inputs: bool | None, output_attentions: bool) -> bool:
        if unpad_inputs is False:
            return False
        if unpad_inputs is True:
            if output_attentions:
                raise ValueError(
                    "unpad_inputs=True cannot return attention maps (the packed path never builds them); pass "
                    "unpad_inputs=False, or leave it unset and the padded path is taken for output_attentions."
                )
            if is_tracing():
                raise ValueError(
                    "unpad_inputs=True cannot be traced, exported or compiled: packing depends on the mask's "
                    "values. Leave unpad_inputs unset (or False) for torch.export, ONNX export and torch.compile."
                )
            return True
        # Unpadded inputs too (a single text): the prepared kernels are the fast part, not only the unpadding.
        return not (output_attentions or self.training or torch.is_grad_enabled() or is_tracing())

    def forward_packed(
        self, input_ids: torch.Tensor, packed: PackedBatch, output_hidden_states: bool = False
    ) -> EncoderOutput:
        """The encoder on sequences laid back to back, for callers that form batches without padding.

        `input_ids` is (tokens,): the real tokens of each sequence of `packed`, one sequence after the
        other (`PackedBatch.from_lengths`). Returns packed (tokens, hidden) states; nothing is padded on
        the way in or out.
        """
        positions = packed.position_in_sequence + self.embeddings.padding_idx + 1
        embedded = self.embeddings(input_ids.unsqueeze(0), None, position_ids=positions.unsqueeze(0)).squeeze(0)
        return self.encoder(embedded, None, packed=packed, output_hidden_states=output_hidden_states)

    def _packed_embeddings(self, packed, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        """Embeds only the real tokens: (tokens, hidden), the same rows the padded embedding would give them."""
        if position_ids is None:  # computed on the padded layout, so they are exactly the padded path's
            position_ids = self.embeddings.default_position_ids(input_ids, attention_mask, inputs_embeds)

        def real_tokens_of(tensor):
            return None if tensor is None else packed.unpad(tensor).unsqueeze(0)

        embedded = self.embeddings(
            real_tokens_of(input_ids), None, real_tokens_of(token_type_ids), real_tokens_of(position_ids),
            real_tokens_of(inputs_embeds),
        )
        return embedded.squeeze(0)


def _config_default(value, default):
    return default if value is None else value


# ----------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------


class XLMRLMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> decoder tied to the word embeddings (+ its own bias), as fairseq."""

    def __init__(self, config: XLMRConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(gelu(self.dense(features))))


class XLMRClassificationHead(nn.Module):
    """fairseq's sentence head (`RobertaClassificationHead`) on the `<s>` token:
    dropout -> dense -> activation (tanh) -> dropout -> out_proj.

    `classifier` of a sequence classifier, and every named head of a fairseq checkpoint (whose sizes and
    activation may differ from the encoder's, hence the optional arguments).
    """

    def __init__(
        self,
        config: XLMRConfig,
        num_labels: int | None = None,
        inner_dim: int | None = None,
        activation_fn: str = "tanh",
        dropout: float | None = None,
    ):
        super().__init__()
        if activation_fn not in ACT2FN:
            raise ValueError(f"unknown activation_fn {activation_fn!r}; use one of {', '.join(sorted(ACT2FN))}.")
        if dropout is None:
            dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        inner_dim = inner_dim or config.hidden_size
        self.dense = nn.Linear(config.hidden_size, inner_dim)
        self.activation = ACT2FN[activation_fn]
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(inner_dim, num_labels if num_labels is not None else config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0, :])
        x = self.activation(self.dense(x))
        return self.out_proj(self.dropout(x))


def _encoder_kwargs(kwargs: dict) -> dict:
    kwargs.pop("return_dict", None)  # handled by @can_return_tuple on each head
    return kwargs


class XLMRForMaskedLM(XLMRPreTrainedModel):
    # A converted fairseq repo holds the LM head and a classification head side by side, like fairseq's model.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]
    _tied_weights_keys = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.roberta = XLMRModel(config, add_pooling_layer=False)
        self.lm_head = XLMRLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> MaskedLMOutput:
        outputs = self.roberta(input_ids, attention_mask=attention_mask, **_encoder_kwargs(kwargs))
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.to(logits.device).view(-1))
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class XLMRForSequenceClassification(XLMRPreTrainedModel):
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = XLMRModel(config, add_pooling_layer=False)
        self.classifier = XLMRClassificationHead(config)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> SequenceClassifierOutput:
        outputs = self.roberta(input_ids, attention_mask=attention_mask, **_encoder_kwargs(kwargs))
        logits = self.classifier(outputs.last_hidden_state)
        loss = self._loss(logits, labels.to(logits.device)) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Same inference of problem_type as transformers, so Trainer configs carry over unchanged.
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            if self.num_labels == 1:
                return MSELoss()(logits.squeeze(), labels.squeeze())
            return MSELoss()(logits, labels)
        if self.config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels)


class XLMRForTokenClassification(XLMRPreTrainedModel):
    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = XLMRModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> TokenClassifierOutput:
        outputs = self.roberta(input_ids, attention_mask=attention_mask, **_encoder_kwargs(kwargs))
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.to(logits.device).view(-1))
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class XLMRForQuestionAnswering(XLMRPreTrainedModel):
    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = XLMRModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self, input_ids=None, attention_mask=None, start_positions=None, end_positions=None, **kwargs
    ) -> QuestionAnsweringModelOutput:
        # Span logits are a softmax over every position, pads included, as in stock: pad states must be the
        # padded path's, so this head packs only when told to.
        if kwargs.get("unpad_inputs") is None and self.config.unpad_inputs is None:
            kwargs["unpad_inputs"] = False
        outputs = self.roberta(input_ids, attention_mask=attention_mask, **_encoder_kwargs(kwargs))
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the input (answer truncated away) are ignored, as in transformers.
            ignored_index = start_logits.size(1)
            start = start_positions.view(-1).to(start_logits.device).clamp(0, ignored_index)
            end = end_positions.view(-1).to(end_logits.device).clamp(0, ignored_index)
            loss_fct = CrossEntropyLoss(ignore_index=ignored_index)
            loss = (loss_fct(start_logits, start) + loss_fct(end_logits, end)) / 2
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class XLMRForMultipleChoice(XLMRPreTrainedModel):
    def __init__(self, config: XLMRConfig):
        super().__init__(config)
        self.roberta = XLMRModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> MultipleChoiceModelOutput:
        # (batch, choices, seq[, hidden]) -> (batch * choices, seq[, hidden])
        reference = input_ids if input_ids is not None else kwargs["inputs_embeds"]
        num_choices = reference.shape[1]
        flat = {
            name: (value.flatten(0, 1) if isinstance(value, torch.Tensor) else value)
            for name, value in {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}.items()
        }
        outputs = self.roberta(**_encoder_kwargs(flat))
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)
        loss = CrossEntropyLoss()(logits, labels.to(logits.device)) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# The auto classes come from the config's AUTO_MAP, so the registration and config.json's auto_map cannot
# drift; `save_pretrained` copies the remote code beside the weights.
XLMRConfig.register_for_auto_class()
for _auto_class, _reference in AUTO_MAP.items():
    _module_name, _class_name = _reference.split(".")
    if _module_name == "modeling_xlmr":
        globals()[_class_name].register_for_auto_class(_auto_class)

__all__ = [
    "XLMRPreTrainedModel",
    "XLMRModel",
    "XLMRForMaskedLM",
    "XLMRForSequenceClassification",
    "XLMRForTokenClassification",
    "XLMRForQuestionAnswering",
    "XLMRForMultipleChoice",
]
