"""XLM-R's tokenizer: transformers' fast-tokenizer API with fairseq's ids (sentencepiece + dictionary) on every input.

The ids come from sentencepiece itself through `sentencepiece_backend.SentencePieceBackend`, which stands in for the
`tokenizers.Tokenizer` that transformers drives; the `tokenizers` pipeline built by `sentencepiece_conversion`
supplies offsets, word ids and the rest of an encoding when they are asked for.
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer
from transformers import AddedToken, BatchEncoding, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

from .configuration_xlmr import copy_remote_code
from .sentencepiece_backend import SentencePieceBackend, SentencePieceReference
from .sentencepiece_conversion import (
    build_backend_tokenizer,
    is_converted_here,
    load_model_proto,
    model_proto_from_tokenizer_json,
    read_fairseq_dict,
)

# per-token columns of `XLMRTokenizerFast._encode_plus`: (option, column, row attribute)
_PER_TOKEN_COLUMNS = (
    ("return_special_tokens_mask", "special_tokens_mask", "special_tokens_mask"),
    ("return_offsets_mapping", "offset_mapping", "offsets"),
)

# the options of transformers' `_encode_plus` that `XLMRTokenizerFast._encode_plus` lays out itself
_COLUMN_OPTIONS = frozenset(
    {
        "add_special_tokens",
        "padding_strategy",
        "truncation_strategy",
        "max_length",
        "stride",
        "is_split_into_words",
        "pad_to_multiple_of",
        "padding_side",
        "return_tensors",
        "return_token_type_ids",
        "return_attention_mask",
        "return_overflowing_tokens",
        "return_special_tokens_mask",
        "return_offsets_mapping",
        "return_length",
        "verbose",
        "split_special_tokens",
    }
)

VOCAB_FILES_NAMES = {
    "vocab_file": "sentencepiece.bpe.model",
    "dict_file": "dict.txt",
    "tokenizer_file": "tokenizer.json",
}


class XLMRTokenizerFast(PreTrainedTokenizerFast):
    """XLM-R tokenizer with fairseq's ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, pieces, `<mask>` last.

    Loads a fairseq model directory (`sentencepiece.bpe.model`, optionally `dict.txt`, whose order then fixes
    the ids) or a directory saved by this class (`tokenizer.json` + `sentencepiece.bpe.model`). A tokenizer.json
    from elsewhere (transformers' conversion of XLM-R) is not trusted: with the sentencepiece model beside it, that
    model is converted again; alone, it only lends its vocabulary and charsmap to rebuild the model from.

    Literal special-token text such as "<mask>" is the special token unless `split_special_tokens=True`, which
    tokenizes it like sentencepiece does. `verify_with_sentencepiece=False` leaves sentencepiece out and runs the
    `tokenizers` pipeline alone (slower, and its ids differ from fairseq's on the rare inputs described in
    `sentencepiece_backend`); it is there for a user who replaces the backend's components.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class = None

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        dict_file: str | None = None,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        sep_token: str = "</s>",
        cls_token: str = "<s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        mask_token: str | AddedToken = "<mask>",
        model_max_length: int = 512,
        clean_up_tokenization_spaces: bool = False,
        verify_with_sentencepiece: bool = True,
        **kwargs,
    ):
        if isinstance(mask_token, str):  # fairseq's fill-mask puts a space before "<mask>": the token takes it
            mask_token = AddedToken(mask_token, lstrip=True, rstrip=False, special=True)
        has_tokenizer_file = tokenizer_file is not None and os.path.isfile(tokenizer_file)
        has_vocab_file = vocab_file is not None and os.path.isfile(vocab_file)
        if not has_tokenizer_file and not has_vocab_file:
            # ValueError, not OSError: transformers replaces an OSError raised here with a generic message
            raise ValueError(
                "XLMRTokenizerFast needs a directory with tokenizer.json or a fairseq sentencepiece.bpe.model "
                f"(got vocab_file={vocab_file!r}, tokenizer_file={tokenizer_file!r})"
            )
        backend = Tokenizer.from_file(tokenizer_file) if has_tokenizer_file else None
        if backend is not None and has_vocab_file and is_converted_here(backend):  # saved by this class
            serialized_model = _read_bytes(vocab_file)
        else:
            if has_vocab_file:  # a fairseq directory (or transformers' checkpoint: its tokenizer.json is redone)
                proto = load_model_proto(vocab_file)
            else:  # a tokenizer.json from elsewhere (e.g. transformers' conversion): keep only the vocabulary
                proto = model_proto_from_tokenizer_json(tokenizer_file)
            dict_symbols = read_fairseq_dict(dict_file) if dict_file and os.path.isfile(dict_file) else None
            backend = build_backend_tokenizer(proto, dict_symbols)
            serialized_model = proto.SerializeToString()
            kwargs.pop("added_tokens_decoder", None)  # read from that tokenizer.json: `<mask>` may lack its lstrip
        for key in ("vocab", "merges", "tokenizer_object", "post_processor", "_spm_precompiled_charsmap"):
            kwargs.pop(key, None)  # transformers' own conversion results: this class builds its backend itself

        self._tokenizer = backend  # given this way, not as `tokenizer_object`, which would deep-copy it
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            verify_with_sentencepiece=verify_with_sentencepiece,
            **kwargs,
        )
        self.vocab_file = vocab_file
        self._serialized_model = serialized_model
        self.verify_with_sentencepiece = verify_with_sentencepiece
        if verify_with_sentencepiece:
            reference = SentencePieceReference(serialized_model, self._tokenizer.get_vocab(with_added_tokens=False))
            self._tokenizer = SentencePieceBackend(self._tokenizer, reference)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs):
        # The files are read in `__init__`; transformers' generic conversion would rebuild a divergent backend.
        return kwargs

    @property
    def can_save_slow_tokenizer(self) -> bool:
        return False

    def update_post_processor(self):
        # The backend's template (<s> A </s></s> B </s>, token type 0 everywhere) is fairseq's; keep it.
        return

    def _encode_plus(self, text, text_pair=None, **options) -> BatchEncoding:
        """transformers' batch call, laid out column by column from this backend's rows: its generic path converts
        each row to a dict and stacks the dicts again, ~1.5 us a row, a sixth of a short line's whole call. Pairs,
        overflowing windows and any option this method does not know take the generic path."""
        split_into_words = options.get("is_split_into_words", False)
        batched = isinstance(text, list) and bool(text) and (not split_into_words or isinstance(text[0], list))
        texts = text if batched else [text]
        if (
            not isinstance(self._tokenizer, SentencePieceBackend)
            or text_pair is not None
            or options.get("return_overflowing_tokens")
            or not options.keys() <= _COLUMN_OPTIONS
            or not all(isinstance(item, list if split_into_words else str) for item in texts)
            or (split_into_words and texts[0] and not isinstance(texts[0][0], str))  # as transformers checks words
        ):
            return super()._encode_plus(text, text_pair, **options)
        self.set_truncation_and_padding(
            padding_strategy=options.get("padding_strategy", PaddingStrategy.DO_NOT_PAD),
            truncation_strategy=options.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE),
            max_length=options.get("max_length"),
            stride=options.get("stride", 0),
            pad_to_multiple_of=options.get("pad_to_multiple_of"),
            padding_side=options.get("padding_side"),
        )
        split_special_tokens = options.get("split_special_tokens")
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        if self._tokenizer.encode_special_tokens != split_special_tokens:
            self._tokenizer.encode_special_tokens = split_special_tokens
        rows = self._tokenizer.encode_rows(
            texts, add_special_tokens=options.get("add_special_tokens", True), is_pretokenized=split_into_words
        )
        columns = {"input_ids": rows.ids}
        token_type_ids, attention_mask = options.get("return_token_type_ids"), options.get("return_attention_mask")
        if token_type_ids or (token_type_ids is None and "token_type_ids" in self.model_input_names):
            columns["token_type_ids"] = [row.type_ids for row in rows]
        if attention_mask or (attention_mask is None and "attention_mask" in self.model_input_names):
            columns["attention_mask"] = rows.attention_masks
        for option, column, name in _PER_TOKEN_COLUMNS:
            if options.get(option):
                columns[column] = rows.column(name)
        if options.get("return_length"):
            columns["length"] = [len(ids) for ids in rows.ids]
        if rows:  # transformers warns about the longest row only once anyway
            longest = max(columns["input_ids"], key=len)
            self._eventual_warn_about_too_long_sequence(
                longest, options.get("max_length"), options.get("verbose", True)
            )
        return_tensors = options.get("return_tensors")
        output = BatchEncoding(columns, rows, tensor_type=return_tensors)
        if batched or return_tensors is not None:
            return output
        # one input: each column's row, as transformers unwraps it
        unwrapped = {key: value[0] if value and isinstance(value[0], list) else value for key, value in output.items()}
        return BatchEncoding(unwrapped, output.encodings)

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        if isinstance(self._tokenizer, SentencePieceBackend):  # the whole text as sentencepiece sees it
            return self._tokenizer.reference_ids_of_plain_text(text)
        return super()._encode_without_added_tokens(text)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        file_names = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        # The sentencepiece model goes beside tokenizer.json: fairseq's converter and this class's checks use it.
        model_file = os.path.join(
            str(save_directory), (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        )
        partial_file = model_file + ".partial"  # never leave a truncated model behind
        with open(partial_file, "wb") as handle:
            handle.write(self._serialized_model)
        os.replace(partial_file, model_file)
        copy_remote_code(save_directory)  # the whole remote-code set, as a saved model has it
        return file_names + (model_file,)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


XLMRTokenizerFast.register_for_auto_class("AutoTokenizer")
