"""NER data, tags and windows without a model: formats, languages, one-line errors, entities, window plans."""

from __future__ import annotations

import itertools
import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_xlmr.cli import main
from modeling_xlmr.common.dependencies import MissingDependencyError, require
from modeling_xlmr.ner.alignment import Window, merge_predictions, plan_windows
from modeling_xlmr.ner.data import NERDataError, choose_labels, read_ner_files, resolve_tags
from modeling_xlmr.ner.tags import entities_of, ordered_labels, scheme_of
from tests.support.ner import LABELS, sentences, write_conll, write_jsonl

KNOWN = ("en", "de", "ru", "nl", "es")


def read(files, labels=None, **options):
    data = read_ner_files([str(path) for path in files], known_languages=KNOWN, **options)
    resolve_tags(data, choose_labels(data, labels, None))
    return data


# ------------------------------------------------------------------------------------------ formats


def test_conll_columns_docstart_crlf_and_file_name_language(tmp_path):
    path = tmp_path / "deu.testb"  # CoNLL-2003's German test file name
    path.write_bytes(
        b"-DOCSTART- -X- O O\r\n\r\nAngela NE I-NP B-PER\r\nMerkel NE I-NP I-PER\r\nspricht VV O O\r\n\r\n\r\n"
        b"Berlin\tB-LOC\n"
    )
    data = read([path])
    assert [sentence.words for sentence in data.sentences] == [["Angela", "Merkel", "spricht"], ["Berlin"]]
    assert [sentence.tags for sentence in data.sentences] == [["B-PER", "I-PER", "O"], ["B-LOC"]]
    assert data.languages() == ["de"]
    assert data.sentences[1].origin == f"{path} line 8"


def test_wikiann_prefix_gives_the_language_and_is_removed(tmp_path):
    rows = sentences(6, seed=0)
    data = read([write_conll(tmp_path / "wikiann.bio", rows, wikiann=True)])
    assert [sentence.words for sentence in data.sentences] == [row["tokens"] for row in rows]
    assert [sentence.language for sentence in data.sentences] == [row["language"] for row in rows]


def test_a_token_with_a_colon_is_not_a_wikiann_prefix(tmp_path):
    path = tmp_path / "times.conll"
    path.write_text("en:Paris B-LOC\nat O\n12:30 O\n", encoding="utf-8")
    data = read([path])
    assert data.sentences[0].words == ["en:Paris", "at", "12:30"] and data.languages() == ["all"]


def test_tables_with_tag_ids_names_and_parquet_class_labels(tmp_path):
    import datasets

    rows = sentences(9, seed=1)
    ids_file = write_jsonl(tmp_path / "train.jsonl", rows, tag_ids=True)
    names_file = tmp_path / "train.json"
    names_file.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(LABELS))),
            "langs": datasets.Sequence(datasets.Value("string")),
        }
    )
    table = {
        "tokens": [row["tokens"] for row in rows],
        "ner_tags": [[LABELS.index(tag) for tag in row["ner_tags"]] for row in rows],
        "langs": [[row["language"]] * len(row["tokens"]) for row in rows],
    }
    parquet_file = tmp_path / "wikiann.parquet"
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(parquet_file))

    expected = [(row["tokens"], row["ner_tags"], row["language"]) for row in rows]
    for data in (read([ids_file], labels=list(LABELS)), read([names_file]), read([parquet_file])):
        assert [(s.words, s.tags, s.language) for s in data.sentences] == expected
    assert read_ner_files([str(parquet_file)]).declared_labels == list(LABELS)  # labels from the file itself


def test_language_tag_and_language_filter(tmp_path):
    rows = sentences(6, seed=2)
    path = write_conll(tmp_path / "train.conll", rows)
    data = read([f"fr={path}"])
    assert data.languages() == ["fr"]
    assert read([write_jsonl(tmp_path / "x.jsonl", rows)], languages=["ru"]).languages() == ["ru"]
    with pytest.raises(NERDataError, match="None of the languages"):
        read([path], languages=["xx"])


def test_labels_from_data_are_ordered_and_checked():
    assert ordered_labels(["I-PER", "O", "B-LOC", "B-PER", "I-LOC"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert scheme_of(["O", "B-PER", "I-PER"]) == "IOB2" and scheme_of(["O", "S-PER", "E-PER"]) == "IOBES"


# ------------------------------------------------------------------------------------------ errors

BAD_FILES = {
    "one column": ("a.conll", "Paris B-LOC\nParis\n", "a.conll line 2: expected a token and its tag"),
    "bad tag": ("b.conll", "Paris LOC\n", "b.conll line 1: tag 'LOC' is not O or B-/I-/E-/S-TYPE"),
    "lengths": ("c.jsonl", '{"tokens": ["a", "b"], "ner_tags": ["O"]}\n', "c.jsonl line 1: 2 tokens but 1 tags"),
    "not json": ("d.jsonl", '{"tokens": ["a"], "ner_tags": ["O"]}\n{oops\n', "d.jsonl line 2 is not JSON"),
    "id range": ("e.jsonl", '{"tokens": ["a"], "ner_tags": [9]}\n', "e.jsonl line 1: tag id 9 is outside 0..6"),
    "no tokens": ("f.jsonl", '{"words_": ["a"], "ner_tags": ["O"]}\n', "f.jsonl line 1 has no tokens"),
    "mixed prefixes": ("g.bio", "en:a O\nde:b O\n", "g.bio line 1: the sentence mixes WikiANN language prefixes"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_rows_are_one_line_errors_naming_file_and_line(case, tmp_path):
    name, content, message = BAD_FILES[case]
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(NERDataError) as caught:
        read([tmp_path / name], labels=list(LABELS))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_ids_without_label_names_ask_for_labels(tmp_path):
    data = read_ner_files([write_jsonl(tmp_path / "x.jsonl", sentences(3, seed=0), tag_ids=True)])
    with pytest.raises(NERDataError, match="--labels"):
        choose_labels(data, None, None)


def test_the_command_reports_bad_data_in_one_line_before_loading_the_model(tmp_path, capsys):
    (tmp_path / "train.conll").write_text("Paris B-LOC\nParis\n", encoding="utf-8")
    out = tmp_path / "out"
    status = main(
        ["finetune", "--task", "ner", "--model", str(tmp_path / "no-model"), "--output-dir", str(out)]
        + ["--train-file", str(tmp_path / "train.conll")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("xlmr finetune: error:")
    assert not out.exists()


class _NotInstalled:
    """A meta-path finder for which a package is not installed."""

    def __init__(self, package: str):
        self.package = package

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == self.package:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


@pytest.mark.parametrize(("module", "extra"), [("seqeval.metrics", "ner"), ("peft", "lora")])
def test_missing_optional_packages_are_one_line_naming_the_extra(monkeypatch, module, extra):
    package = module.split(".")[0]
    for name in [name for name in sys.modules if name.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(package), *sys.meta_path])
    with pytest.raises(MissingDependencyError) as caught:
        require(module)
    assert f"pip install 'xlmr[{extra}]'" in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------ entities

TAGS = st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]), max_size=12)
IOBES_TAGS = st.lists(
    st.sampled_from(["O", "B-PER", "I-PER", "E-PER", "S-PER", "S-LOC", "B-LOC", "E-LOC"]), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(tags=TAGS)
def test_entities_are_read_as_seqeval_reads_iob(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    assert [(e.type, e.start, e.end - 1) for e in entities_of(tags)] == get_entities(tags)


@settings(max_examples=300, deadline=None)
@given(tags=IOBES_TAGS)
def test_valid_iobes_entities_match_seqeval_strict(tags):
    from seqeval.scheme import IOBES, Entities

    strict = Entities([tags], IOBES).entities[0]
    wanted = {(e.tag, e.start, e.end) for e in strict}
    found = {(e.type, e.start, e.end) for e in entities_of(tags)}
    assert wanted <= found  # every strictly valid entity is found (invalid runs are read leniently)


# ------------------------------------------------------------------------------------------ windows


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(st.integers(1, 9), max_size=60),
    budget=st.integers(1, 24),
    stride=st.integers(0, 12),
)
def test_window_plans_cover_every_word_within_the_budget(counts, budget, stride):
    windows = plan_windows(counts, budget, stride)
    covered = set()
    for first, end in windows:
        assert first < end and (sum(min(c, budget) for c in counts[first:end]) <= budget or end == first + 1)
        covered |= set(range(first, end))
    assert covered == set(range(len(counts)))
    for (first, end), (next_first, next_end) in itertools.pairwise(windows):
        assert first < next_first <= end < next_end  # progress, no gap
        assert next_first == end or sum(min(c, budget) for c in counts[next_first:end]) <= stride


def test_each_word_takes_the_label_of_its_most_central_window():
    # words 0..4; window A holds words 0-3 (word 3 at its edge), window B words 2-4 (word 3 in its middle)
    a = Window(0, 0, 4, [0, 10, 11, 12, 13, 2], [], [(1, 0), (2, 1), (3, 2), (4, 3)])
    b = Window(0, 2, 5, [0, 12, 13, 14, 2], [], [(1, 2), (2, 3), (3, 4)])
    predicted = [[0, 1, 1, 1, 1, 0], [0, 2, 2, 2, 0]]
    assert merge_predictions([a, b], predicted, [5]) == [[1, 1, 1, 2, 2]]
