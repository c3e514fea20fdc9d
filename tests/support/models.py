"""Tiny XLM-R models, repos and batches the tests (and benchmarks) build, and the numbers they compare with."""

from __future__ import annotations

from pathlib import Path

import torch

from modeling_xlmr import XLMRConfig, XLMRForMaskedLM

REAL_VOCAB = 250002
# The shape of the tiny random models: fast on two cores, still multi-layer and multi-head.
TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

# Texts in several scripts, a repeat and an empty one (batch order and pooling must not care).
TEXTS = [
    "Hello world!",
    "Le petit chat dort sur la chaise pendant que nous mangeons une soupe chaude.",
    "Мы читаем новые книги.",
    "我们今天在公园里散步,看到很多花和小鸟。",
    "",
    "η θάλασσα είναι ήσυχη σήμερα",
    "ذهب الطالب إلى المدرسة في الصباح",
    "Hello world!",
    "बच्चे सुबह स्कूल जाते हैं",
]


def tiny_config(**overrides) -> XLMRConfig:
    return XLMRConfig(**{**TINY_SIZES, **overrides})


def tiny_config_kwargs(**overrides) -> dict:
    """A tiny XLM-R shape shared by tests (the real special-token ids, a small vocabulary)."""
    return {
        "vocab_size": 120,
        **TINY_SIZES,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        **overrides,
    }


def random_padded_batch(
    lengths: list[int], vocab_size: int, pad_id: int = 1, padding_side: str = "right", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> random tokens </s>` rows of the given total lengths, padded with pad_id."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens = torch.randint(4, vocab_size, (length,), generator=generator)
        tokens[0], tokens[-1] = 0, 2
        if padding_side == "right":
            input_ids[row, :length] = tokens
        else:
            input_ids[row, width - length :] = tokens
    return input_ids, input_ids.ne(pad_id).long()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def build_tiny_repo(directory: Path, tokenizer, model_class=XLMRForMaskedLM, seed: int = 0, **config) -> Path:
    """A random 2-layer, hidden-32 XLM-R on the real vocabulary, saved with `tokenizer`."""
    torch.manual_seed(seed)
    model = model_class(XLMRConfig(**tiny_config_kwargs(vocab_size=REAL_VOCAB, **config)))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def fast_stock_tokenizer(tokenizer_json: str):
    """Transformers' generic fast tokenizer on XLM-R's tokenizer.json: a stock repo's tokenizer, quick to load."""
    from transformers import PreTrainedTokenizerFast

    special = dict(
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", sep_token="</s>", cls_token="<s>"
    )
    return PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, mask_token="<mask>", model_max_length=512, **special)


def word_level_tokenizer(texts: list[str]):
    """A word-level tokenizer over the words of `texts` (XLM-R's special ids 0-3, digits one by one): it loads in
    milliseconds where the real vocabulary takes seconds, for tests that load a model in many processes (Ray)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for text in texts for word in text.split()} | {str(digit) for digit in range(10)})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{word: index + 4 for index, word in enumerate(words)}}
    vocab["<mask>"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    backend.post_processor = processors.TemplateProcessing(  # <s> text </s>, as XLM-R's
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", sep_token="</s>")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, cls_token="<s>", mask_token="<mask>", model_max_length=512, **special
    )
