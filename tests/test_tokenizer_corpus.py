"""The multilingual corpus the tokenizer parity tests run on is large, multilingual and deterministic."""

from tests.support.corpus import CORPUS_LOCALES, multilingual_corpus, script_of


def test_corpus_is_large_multilingual_and_deterministic():
    corpus = multilingual_corpus()
    assert len(corpus) >= 10_000
    assert len(CORPUS_LOCALES) >= 30
    scripts = {script_of(line) for line in corpus} - {None}
    assert len(scripts) >= 25, sorted(scripts)
    assert corpus == multilingual_corpus()
