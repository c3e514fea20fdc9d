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
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import batching
from .hub_loading import (
    FairseqClassificationHead,
    load_classification_heads,
    load_model_and_tokenizer,
    parse_dtype,
)
from .modeling_xlmr import XLMRModel

MASK_TOKEN = "<mask>"
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")  # letters/digits runs, and each punctuation mark on its own


@dataclass
class WordFeatures:
    """Word-level features: row 0 is `<s>`, then one row per word, then `</s>` (fairseq's layout).

    `features` is (words + 2, hidden), or a list of those (one per layer) for `return_all_hiddens`.
    `spans` are character offsets into the sentence (None for `<s>`/`</s>`).
    """

    words: list[str]
    spans: list[tuple[int, int] | None]
    features: torch.Tensor | list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.words)


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
        ``"fp16"``, ``"bf16"`` (or their long names) or a torch dtype. Heads converted from fairseq
        are registered under their fairseq names.
        """
        model, tokenizer = load_model_and_tokenizer(
            name_or_path, device_map=device_map, dtype=parse_dtype(dtype), revision=revision, **model_kwargs
        )
        interface = cls(model, tokenizer)
        classifier = getattr(model, "classifier", None)
        if isinstance(classifier, nn.Module):
            name = getattr(model.config, "fairseq_head_name", None) or "classifier"
            interface.classification_heads[name] = classifier
            interface.head_labels[name] = interface._config_labels()
        extra_heads = load_classification_heads(name_or_path, model.config, revision, skip=tuple(interface.head_labels))
        for name, (head, labels) in extra_heads.items():
            interface.classification_heads[name] = head.to(interface._output_device, interface.dtype)
            interface.head_labels[name] = labels
        return interface

    # ------------------------------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------------------------------

    @property
    def backbone(self) -> nn.Module:
        """The bare encoder (`model.roberta`, or the model itself when it has no head)."""
        return self.model.base_model

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the word embeddings (the first one under a device map)."""
        return self.backbone.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.get_input_embeddings().weight.dtype

    @property
    def max_positions(self) -> int:
        """Tokens one sequence may hold, `<s>` and `</s>` included (512 for XLM-R)."""
        # Stock XLMRobertaConfig lacks the property: positions start after the padding index.
        return self.config.max_position_embeddings - self.config.pad_token_id - 1

    @property
    def _output_device(self) -> torch.device:
        # Under a device map the last layer may live elsewhere than the embeddings; heads go there.
        return next(self.backbone.encoder.layer[-1].parameters()).device

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
        return self._tokenize(text)["input_ids"]

    def _tokenize(self, text: str | list[str], **kwargs):
        # As fairseq, text is only text: a literal "<s>" or "<mask>" in it is spelled out in pieces,
        # never turned into the special token (tokenizers that ignore the flag keep their own rule).
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True, verbose=False, **kwargs)

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
        head = FairseqClassificationHead(hidden, inner_dim or hidden, num_classes, **kwargs)
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
        encoding = self._tokenize(sentence, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        words = [(match.group(), match.span()) for match in WORD_PATTERN.finditer(sentence)]
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
        pooling: str = "cls",
        normalize: bool = False,
        max_tokens_per_batch: int = batching.DEFAULT_MAX_TOKENS_PER_BATCH,
        long_text: str = "error",
        chunk_overlap: int = batching.DEFAULT_CHUNK_OVERLAP,
        progress: bool = False,
    ) -> torch.Tensor:
        """One float32 vector per text, in input order: (len(texts), hidden) on the CPU.

        Texts are sorted by length and batched under `max_tokens_per_batch` padded tokens. A text
        over 512 tokens raises (`long_text="error"`), is cut (`"truncate"`) or is encoded as
        overlapping windows whose vectors are averaged, weighted by token count (`"chunk"`);
        see `modeling_xlmr.batching`. `mean` pooling averages all real tokens, `<s>`/`</s>` included.
        """
        batching.check_choice("pooling", pooling, batching.POOLINGS)
        windows = self._plan(texts, long_text, chunk_overlap)
        pooled = torch.empty((len(windows), self.config.hidden_size))
        for indices, hidden, attention_mask in self._run_batches(windows, max_tokens_per_batch, progress):
            pooled[indices] = batching.pool(hidden, attention_mask, pooling).cpu()
        embeddings = batching.combine_windows(pooled, windows, len(texts))
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

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
        batching.check_choice("long_text", long_text, ("error", "truncate"))
        name = self._default_head() if head is None else head
        classifier, labels = self._head(name), self._labels(name)
        windows = self._plan(texts, long_text, batching.DEFAULT_CHUNK_OVERLAP)
        probabilities = torch.empty((len(windows), len(labels)))
        for indices, hidden, _ in self._run_batches(windows, max_tokens_per_batch, progress):
            logits = classifier(hidden.to(self._output_device))
            probabilities[indices] = logits.float().softmax(dim=-1).cpu()
        return [classification_record(row, labels) for row in probabilities.tolist()]

    def _plan(self, texts: Sequence[str], long_text: str, chunk_overlap: int) -> list[batching.Window]:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts (wrap a single text: [text]).")
        content_ids = self._tokenize(list(texts))["input_ids"] if texts else []
        return batching.plan_windows(
            content_ids,
            bos_id=self.tokenizer.bos_token_id,
            eos_id=self.tokenizer.eos_token_id,
            max_length=self.max_positions,
            long_text=long_text,
            chunk_overlap=chunk_overlap,
        )

    def _run_batches(
        self, windows: list[batching.Window], max_tokens_per_batch: int, progress: bool
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Yields (window indices, last hidden states, attention mask) per length-sorted batch,
        in eval mode and inference mode on the packed path."""
        bar = tqdm(total=sum(map(len, windows)), unit="tok", disable=not progress, dynamic_ncols=True)
        with evaluating(self), torch.inference_mode(), bar:
            for indices, batch in batching.iterate_batches(windows, max_tokens_per_batch):
                input_ids, attention_mask = batching.collate(batch, self.config.pad_token_id)
                input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
                hidden = self._encode(input_ids, attention_mask).last_hidden_state
                yield indices, hidden, attention_mask
                bar.update(int(attention_mask.sum()))

    def _default_head(self) -> str:
        classifier = getattr(self.model, "classifier", None)
        for name, head in self.classification_heads.items():
            if head is classifier:
                return name
        if len(self.classification_heads) == 1:
            return next(iter(self.classification_heads))
        known = ", ".join(map(repr, self.classification_heads)) or "none"
        raise ValueError(
            f"no default classification head (heads: {known}); load a sequence-classification repo or pass head=NAME."
        )

    def _labels(self, head: str) -> list[str]:
        num_classes = self.classification_heads[head].out_proj.out_features
        labels = self.head_labels.get(head)
        if labels is None or len(labels) != num_classes:
            labels = [f"LABEL_{index}" for index in range(num_classes)]
        return labels

    def _config_labels(self) -> list[str]:
        id2label = self.config.id2label or {}
        return [str(id2label.get(index, f"LABEL_{index}")) for index in range(self.config.num_labels)]


def classification_record(probabilities: list[float], labels: list[str]) -> dict:
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {
        "label": labels[best],
        "score": probabilities[best],
        "probabilities": dict(zip(labels, probabilities)),
    }


def word_alignment_matrix(
    token_offsets: Sequence[tuple[int, int]], word_spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """(words + 2, tokens + 2) weights mapping token features (with `<s>`/`</s>`) to word rows.

    A token overlapping several words is shared evenly between them (fairseq's
    `align_features_to_words`); a token covering no word character (a lone '▁') goes to the next
    word (or the last one), so every token's features land in exactly one row sum.
    """
    num_tokens, num_words = len(token_offsets), len(word_spans)
    matrix = torch.zeros((num_words + 2, num_tokens + 2))
    matrix[0, 0] = 1.0  # <s>
    matrix[-1, -1] = 1.0  # </s>
    for token, (start, end) in enumerate(token_offsets):
        overlapping = [w for w, (w_start, w_end) in enumerate(word_spans) if start < w_end and w_start < end]
        if not overlapping and num_words:
            following = [w for w, (w_start, _) in enumerate(word_spans) if w_start >= end]
            overlapping = [following[0] if following else num_words - 1]
        for word in overlapping:
            matrix[1 + word, 1 + token] = 1.0 / len(overlapping)
    return matrix


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """Eval mode inside the block, the previous mode after it (fairseq's `utils.model_eval`)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


__all__ = ["XLMRHubInterface", "WordFeatures", "parse_dtype", "word_alignment_matrix"]
