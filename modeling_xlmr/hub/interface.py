"""fairseq's XLM-R hub interface (`RobertaHubInterface`) on the Transformers model, plus a batch API.

```python
>>> xlmr = XLMRHubInterface.from_pretrained("path/to/xlmr.base", dtype="bf16", device_map="auto")
>>> xlmr.eval()
>>> tokens = xlmr.encode("Hello world!")           # tensor([0, 35378, 8999, 38, 2])
>>> features = xlmr.extract_features(tokens)       # (1, 5, 768)
>>> vectors = xlmr.embed(texts, pooling="mean", long_text="chunk")   # (len(texts), 768), input order
```

The fairseq methods keep fairseq's semantics (ids, error messages, return types). What differs:
`fill_mask` fixes fairseq#1306 (a word-initial piece fills with its space), and
`extract_features_aligned_to_words` uses the tokenizer's character offsets and a regex word split
instead of spaCy, returning a `WordFeatures` instead of a spaCy `Doc`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.dtypes import parse_dtype
from ..configuration_xlmr import max_sequence_length
from ..inference import batching
from ..inference.engine import InferenceEngine, evaluating
from ..modeling_xlmr import XLMRClassificationHead, XLMRModel
from ..quantization import runs_int8
from .alignment import WordFeatures, word_alignment_matrix, words_with_spans
from .heads import default_head, label_names
from .loading import load_repo
from .sentence_settings import SentenceSettings

MASK_TOKEN = "<mask>"


class XLMRHubInterface(nn.Module):
    """fairseq's `RobertaHubInterface` API over an XLM-R Transformers model and its tokenizer.

    `model` is an `XLMRForMaskedLM` (for `fill_mask`), an `XLMRForSequenceClassification` (its
    `classifier` becomes a classification head) or a bare `XLMRModel`.
    """

    def __init__(self, model: nn.Module, tokenizer, classification_heads: dict[str, nn.Module] | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.classification_heads = nn.ModuleDict(classification_heads or {})
        self.head_labels: dict[str, list[str] | None] = {}
        self.sentence_settings = SentenceSettings()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        device_map: str | dict | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        **model_kwargs,
    ) -> XLMRHubInterface:
        """Load a converted repo or any XLM-R repo (local directory or Hub id) with its tokenizer.

        `device_map` (e.g. ``"auto"``) places the model through Accelerate; `dtype` is ``"fp32"``,
        ``"fp16"``, ``"bf16"`` (or their long names) or a torch dtype, or ``"int8"``: fp32 weights whose
        encoder projections run as int8 GEMMs on CPU (`XLMRPreTrainedModel.quantize_for_inference`); its
        features then come without autograd, which int8 GEMMs do not have. Heads converted from fairseq are
        registered under their fairseq names.
        """
        repo = load_repo(
            name_or_path, device_map=device_map, dtype=parse_dtype(dtype), revision=revision, **model_kwargs
        )
        interface = cls(repo.model, repo.tokenizer, {name: head for name, (head, _) in repo.heads.items()})
        interface.head_labels = {name: labels for name, (_, labels) in repo.heads.items()}
        interface.sentence_settings = repo.sentence_settings
        return interface

    # ------------------------------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------------------------------

    @property
    def backbone(self) -> nn.Module:
        """The bare encoder (`model.roberta`, or the model itself when it has no head)."""
        return self.engine.backbone

    @property
    def config(self):
        return self.engine.config

    @property
    def device(self) -> torch.device:
        """Where inputs go (the first device under a device map)."""
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.get_input_embeddings().weight.dtype

    @property
    def max_positions(self) -> int:
        """Tokens one sequence may hold, `<s>` and `</s>` included (512 for XLM-R)."""
        return max_sequence_length(self.config)

    @property
    def engine(self) -> InferenceEngine:
        """The batch engine `embed` and `classify` run on (same model and tokenizer)."""
        return InferenceEngine(self.model, self.tokenizer)

    @property
    def _output_device(self) -> torch.device:
        # Under a device map the last layer may live elsewhere than the embeddings; heads go there.
        return self.engine.output_device

    # ------------------------------------------------------------------------------------------
    # Tokens
    # ------------------------------------------------------------------------------------------

    def encode(self, sentence: str, *addl_sentences: str, no_separator: bool = False) -> torch.LongTensor:
        """`<s> a b c </s>`; more sentences are appended as `</s> d e f </s>` (without the extra
        `</s>` separator when `no_separator`)."""
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        tokens = [bos, *self._content_ids(sentence), eos]
        for other in addl_sentences:
            tokens += ([] if no_separator else [eos]) + self._content_ids(other) + [eos]
        return torch.tensor(tokens, dtype=torch.long)

    def decode(self, tokens: torch.LongTensor) -> str | list[str]:
        """Ids back to text; a leading `<s>` is dropped and `</s></s>` separates sentences (a list
        is returned for several sentences, a str for one)."""
        if tokens.dim() != 1:
            raise ValueError(f"decode takes one sequence (a 1-D tensor), got shape {tuple(tokens.shape)}.")
        ids = tokens.tolist()
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        if ids and ids[0] == bos:
            ids = ids[1:]
        sentences, current = [], []
        for position, token_id in enumerate(ids):
            current.append(token_id)
            if token_id == eos and position + 1 < len(ids) and ids[position + 1] == eos:
                sentences.append(current)
                current = []
        sentences.append(current)
        decoded = [self._pieces_to_text(sentence) for sentence in sentences]
        return decoded[0] if len(decoded) == 1 else decoded

    def _content_ids(self, text: str) -> list[int]:
        return self.engine.content_ids([text])[0]

    def _pieces_to_text(self, ids: list[int]) -> str:
        # fairseq: Dictionary.string drops <s> and </s>, then the sentencepiece decoder joins pieces.
        skipped = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id}
        pieces = self.tokenizer.convert_ids_to_tokens([i for i in ids if i not in skipped])
        return "".join(pieces).replace("\u2581", " ").strip()

    def _as_batch(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.size(-1) > self.max_positions:
            raise ValueError(
                f"tokens exceeds maximum length: {tokens.size(-1)} > {self.max_positions}; "
                "truncate the input, or use embed(..., long_text='chunk') for long texts."
            )
        return tokens

    # ------------------------------------------------------------------------------------------
    # Features and heads
    # ------------------------------------------------------------------------------------------

    def extract_features(
        self, tokens: torch.LongTensor, return_all_hiddens: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """Last layer's features (batch, seq, hidden), or all `n_layers + 1` hidden states with the
        embedding output first; the last of those is the very tensor the plain call returns."""
        tokens = self._as_batch(tokens).to(self.device)
        attention_mask = tokens.ne(self.config.pad_token_id).long()
        outputs = self._encode(tokens, attention_mask, output_hidden_states=return_all_hiddens)
        if return_all_hiddens:
            return list(outputs.hidden_states)
        return outputs.last_hidden_state

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False):
        # This package's encoder skips padding entirely (packed path); a stock one gets the mask only.
        packed = {"unpad_inputs": True} if isinstance(self.backbone, XLMRModel) else {}
        # int8 GEMMs have no gradient, and under autograd the fast path (int8 with it) steps aside for the float
        # modules: fairseq's plain `extract_features(tokens)` on a hub loaded with dtype="int8" would quietly run
        # fp32. An int8 encoder in eval mode therefore runs without autograd here, as its dtype asked.
        int8 = bool(packed) and not self.backbone.training and runs_int8(self.backbone.encoder.layer)
        with torch.no_grad() if int8 else contextlib.nullcontext():
            return self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states, **packed
            )

    def register_classification_head(
        self, name: str, num_classes: int | None = None, inner_dim: int | None = None, **kwargs
    ) -> None:
        """Add (or replace) a fairseq sentence head: dropout -> dense -> tanh -> dropout -> out_proj
        on `<s>`. `kwargs`: `activation_fn` (default "tanh"), `pooler_dropout` (default 0.0)."""
        if num_classes is None or num_classes < 1:
            raise ValueError(f"register_classification_head({name!r}) needs num_classes >= 1, got {num_classes}.")
        hidden = self.config.hidden_size
        activation_fn, dropout = kwargs.pop("activation_fn", "tanh"), kwargs.pop("pooler_dropout", 0.0)
        if kwargs:
            raise TypeError(f"register_classification_head got unexpected arguments {sorted(kwargs)}.")
        head = XLMRClassificationHead(self.config, num_classes, inner_dim or hidden, activation_fn, dropout)
        self.classification_heads[name] = head.to(self._output_device, self.dtype)
        self.head_labels[name] = None

    def predict(self, head: str, tokens: torch.LongTensor, return_logits: bool = False) -> torch.Tensor:
        """Log-probabilities (or logits) of classification head `head` for `tokens`."""
        classifier = self._head(head)
        features = self.extract_features(tokens.to(self.device))
        logits = classifier(features.to(self._output_device))
        return logits if return_logits else F.log_softmax(logits, dim=-1)

    def _head(self, name: str) -> nn.Module:
        if name not in self.classification_heads:
            known = ", ".join(map(repr, self.classification_heads)) or "none"
            raise ValueError(
                f"no classification head named {name!r} (heads: {known}); add one with "
                "register_classification_head(name, num_classes)."
            )
        return self.classification_heads[name]

    def fill_mask(self, masked_input: str, topk: int = 5) -> list[tuple[str, float, str]]:
        """Top-k fillings of the single `<mask>` in `masked_input`: (filled sentence, probability,
        predicted token). A word-initial piece ('▁world') fills as ' world' (fairseq#1306)."""
        if masked_input.count(MASK_TOKEN) != 1:
            raise ValueError(f"Please add one {MASK_TOKEN} token for the input, eg: 'He is a {MASK_TOKEN} guy'")
        lm_head = getattr(self.model, "lm_head", None)
        if lm_head is None:
            raise ValueError(
                f"this model has no LM head ({type(self.model).__name__}); load a masked-LM repo for fill_mask."
            )
        # As fairseq: each span is encoded on its own (right-stripped) and joined around <mask>.
        before, after = (self._content_ids(span.rstrip()) for span in masked_input.split(MASK_TOKEN))
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        tokens = torch.tensor([bos, *before, self.tokenizer.mask_token_id, *after, eos], dtype=torch.long)
        masked_index = 1 + len(before)

        with evaluating(self.model), torch.no_grad():
            features = self.extract_features(tokens)
            logits = lm_head(features[0, masked_index].to(self._output_device))
        probabilities, indices = logits.float().softmax(dim=-1).topk(k=topk)

        replaced = f" {MASK_TOKEN}" if f" {MASK_TOKEN}" in masked_input else MASK_TOKEN
        filled = []
        for probability, piece in zip(probabilities.tolist(), self.tokenizer.convert_ids_to_tokens(indices.tolist())):
            predicted = piece.replace("\u2581", " ").strip()
            if piece.startswith("\u2581"):
                predicted = " " + predicted
            filled.append((masked_input.replace(replaced, predicted), probability, predicted))
        return filled

    def extract_features_aligned_to_words(self, sentence: str, return_all_hiddens: bool = False) -> WordFeatures:
        """Features per word (regex words: letter/digit runs and single punctuation marks), fairseq's
        way: a token's features are split evenly among the words it overlaps and summed per word."""
        encoding = self.tokenizer(
            sentence, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True, verbose=False
        )
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        words = words_with_spans(sentence)
        tokens = torch.tensor([self.tokenizer.bos_token_id, *ids, self.tokenizer.eos_token_id])
        alignment = word_alignment_matrix(offsets, [span for _, span in words])
        features = self.extract_features(tokens, return_all_hiddens=return_all_hiddens)

        def align(layer: torch.Tensor) -> torch.Tensor:
            return alignment.to(layer.device, layer.dtype) @ layer[0]

        aligned = [align(layer) for layer in features] if return_all_hiddens else align(features)
        return WordFeatures(
            words=["<s>", *(word for word, _ in words), "</s>"],
            spans=[None, *(span for _, span in words), None],
            features=aligned,
        )

    # ------------------------------------------------------------------------------------------
    # Batch API
    # ------------------------------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        pooling: str | None = None,
        normalize: bool | None = None,
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        long_text: str = "error",
        chunk_overlap: int = batching.DEFAULT_CHUNK_OVERLAP,
        progress: bool = False,
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> torch.Tensor:
        """One float32 vector per text, in input order: (len(texts), hidden) on the CPU.

        `pooling`, `normalize`, the length limit and the prompt default to the repo's sentence-transformers
        settings (e5: mean pooling, normalized), else `<s>` pooling, not normalized, 512 tokens, no prompt.
        `prompt` is a text put before every input; `prompt_name` picks one of the repo's prompts ("query").
        Texts are sorted by length and batched under `max_tokens_per_batch` tokens. A text over the limit
        raises (`long_text="error"`), is cut (`"truncate"`) or is encoded as overlapping windows whose
        vectors are averaged, weighted by token count (`"chunk"`); see `modeling_xlmr.inference.batching`.
        `mean` pooling averages all real tokens, `<s>`/`</s>` included.
        """
        settings = self.sentence_settings
        return self.engine.embed(
            texts,
            settings.pooling if pooling is None else pooling,
            settings.normalize if normalize is None else normalize,
            max_tokens_per_batch,
            long_text,
            chunk_overlap,
            progress=progress,
            prompt=settings.prompt(prompt, prompt_name),
            max_length=settings.max_length,
        )

    def classify(
        self,
        texts: Sequence[str],
        head: str | None = None,
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        long_text: str = "error",
        progress: bool = False,
    ) -> list[dict]:
        """Classify each text with `head` (default: the model's own classifier, or the only head).

        Returns, in input order, ``{"label", "score", "probabilities": {label: p}}`` with labels from
        `config.id2label` (or the fairseq head's labels). `long_text` is "error" or "truncate".
        """
        name = (
            default_head(self.classification_heads, getattr(self.model, "classifier", None)) if head is None else head
        )
        classifier = self._head(name)
        labels = label_names(classifier, self.head_labels.get(name))
        return self.engine.classify(texts, classifier, labels, max_tokens_per_batch, long_text, progress=progress)


__all__ = ["XLMRHubInterface", "WordFeatures"]
