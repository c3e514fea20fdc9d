"""NLI data reading: XNLI's formats, generic files with named columns, label names and ids."""

from __future__ import annotations

import json

import pytest

from modeling_xlmr.nli.data import (
    XNLI_LABELS,
    ColumnNames,
    DataFile,
    NLIDataError,
    label_maps,
    load_nli_data,
    ordered_languages,
)
from modeling_xlmr.nli.evaluation import AccuracyTable, infer_setting

XNLI_LABEL2ID = label_maps(XNLI_LABELS)[1]


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_xnli_1_0_tsv_with_bare_quotes_and_language_column(tmp_path):
    header = (
        "language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
        "sentence1\tsentence2\tpromptID\tpairID\tgenre\tlabel1\n"
    )
    rows = (
        'fr\tneutral\t(x)\t(y)\t(x)\t(y)\tIl a dit "bonjour\tNA\t1\t1n\tfiction\tneutral\n'
        "de\tcontradiction\t(x)\t(y)\t(x)\t(y)\tEr kommt\tEr kommt nicht\t2\t2c\tfiction\tcontradiction\n"
    )
    data = load_nli_data([write(tmp_path / "xnli.dev.tsv", header + rows)], XNLI_LABEL2ID)
    assert data.to_list() == [
        {"premise": 'Il a dit "bonjour', "hypothesis": "NA", "label": 1, "language": "fr"},
        {"premise": "Er kommt", "hypothesis": "Er kommt nicht", "label": 2, "language": "de"},
    ]


def test_xnli_mt_train_file_hypo_column_and_contradictory(tmp_path):
    text = "premise\thypo\tlabel\nUn homme .\tUne personne .\tentailment\nIl pleut .\tIl fait beau .\tcontradictory\n"
    data = load_nli_data([DataFile.parse(f"fr={write(tmp_path / 'multinli.train.fr.tsv', text)}")], XNLI_LABEL2ID)
    assert data["label"] == [0, 2] and data["language"] == ["fr", "fr"]
    assert data["hypothesis"] == ["Une personne .", "Il fait beau ."]


def test_hub_xnli_schema_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"premise": "a", "hypothesis": "b", "label": 2}, {"premise": "c", "hypothesis": "d", "label": 0}]
    jsonl = write(tmp_path / "en.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    parquet = str(tmp_path / "sw.parquet")
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    data = load_nli_data([f"en={jsonl}", f"sw={parquet}"], XNLI_LABEL2ID)
    assert data["label"] == [2, 0, 2, 0]
    assert data["language"] == ["en", "en", "sw", "sw"]


def test_generic_csv_with_named_columns_and_label_names(tmp_path):
    text = 'text_a,text_b,gold,lang\n"x, y",z,Neutral,en\nu,v,ENTAILMENT,es\n'
    columns = ColumnNames(premise="text_a", hypothesis="text_b", label="gold", language="lang")
    data = load_nli_data([write(tmp_path / "pairs.csv", text)], XNLI_LABEL2ID, columns)
    assert data.to_list() == [
        {"premise": "x, y", "hypothesis": "z", "label": 1, "language": "en"},
        {"premise": "u", "hypothesis": "v", "label": 0, "language": "es"},
    ]


def test_custom_label_names_and_language_filter(tmp_path):
    label2id = label_maps(["same", "different"])[1]
    text = "premise,hypothesis,label,language\na,a,same,en\na,b,different,de\nc,c,1,de\n"
    data = load_nli_data([write(tmp_path / "p.csv", text)], label2id, languages=["de"])
    assert data["label"] == [1, 1] and data["language"] == ["de", "de"]
    with pytest.raises(NLIDataError, match="label 2 is outside 0..1"):
        load_nli_data([write(tmp_path / "q.csv", "premise,hypothesis,label\na,b,2\n")], label2id)
    with pytest.raises(NLIDataError, match=r"None of the languages \['fr'\] occur"):
        load_nli_data([write(tmp_path / "r.csv", text)], label2id, languages=["fr"])


def test_named_column_that_does_not_exist(tmp_path):
    path = write(tmp_path / "p.jsonl", '{"premise": "a", "hypothesis": "b", "label": 0}\n')
    with pytest.raises(NLIDataError, match="has no label column \\(looked for 'gold'.*--label-column"):
        load_nli_data([path], XNLI_LABEL2ID, ColumnNames(label="gold"))


def test_unknown_extension(tmp_path):
    with pytest.raises(NLIDataError, match="Cannot tell the format"):
        load_nli_data([write(tmp_path / "p.txt", "a b 0\n")], XNLI_LABEL2ID)


def test_language_tags_only_when_they_look_like_languages(tmp_path):
    assert DataFile.parse("zh-CN=data/test.jsonl") == DataFile("data/test.jsonl", "zh-CN")
    assert DataFile.parse("data/a=b.jsonl") == DataFile("data/a=b.jsonl")
    odd = tmp_path / "en=odd.jsonl"
    odd.write_text("")
    assert DataFile.parse(str(odd)) == DataFile(str(odd))  # an existing file wins


def test_table_order_average_and_setting():
    assert ordered_languages(["ur", "xx", "en", "de", "fr"]) == ["en", "fr", "de", "ur", "xx"]
    table = AccuracyTable.from_predictions([0, 1, 2, 2], [0, 1, 1, 2], ["fr", "en", "en", "fr"], "m")
    assert table.accuracy == {"en": 0.5, "fr": 1.0}
    assert table.average == 0.75  # unweighted over languages, like the paper's avg column
    assert table.to_markdown().splitlines()[2] == "`m` | 50.0 | 100.0 | 75.0"
    assert infer_setting(["en"], ["en", "fr", "de"]) == "cross-lingual transfer"
    assert infer_setting(["en", "fr", "de"], ["en", "fr", "de"]) == "translate-train-all"
    assert infer_setting(["en"], ["en"]) is None


def test_language_from_xnli_file_layouts(tmp_path):
    text = "premise\thypo\tlabel\nUn homme .\tUne personne .\tentailment\n"
    assert load_nli_data([write(tmp_path / "multinli.train.fr.tsv", text)], XNLI_LABEL2ID)["language"] == ["fr"]
    (tmp_path / "sw").mkdir()
    rows = '{"premise": "a", "hypothesis": "b", "label": 1}\n'
    assert load_nli_data([write(tmp_path / "sw" / "test.jsonl", rows)], XNLI_LABEL2ID)["language"] == ["sw"]
    # A name that says nothing leaves the rows untagged, and an explicit tag always wins.
    assert load_nli_data([write(tmp_path / "pairs.jsonl", rows)], XNLI_LABEL2ID)["language"] == ["all"]
    assert load_nli_data([f"de={tmp_path / 'sw' / 'test.jsonl'}"], XNLI_LABEL2ID)["language"] == ["de"]


def test_all_languages_schema_is_refused_clearly(tmp_path):
    row = {
        "premise": {"en": "a", "fr": "b"},
        "hypothesis": {"language": ["en", "fr"], "translation": ["c", "d"]},
        "label": 0,
    }
    path = write(tmp_path / "all.jsonl", json.dumps(row) + "\n")
    with pytest.raises(NLIDataError, match="the premise is a dict, not text.*per-language config"):
        load_nli_data([path], XNLI_LABEL2ID)


def test_byte_order_mark_before_the_header(tmp_path):
    path = tmp_path / "multinli.train.de.tsv"
    path.write_bytes("\ufeffpremise\thypo\tlabel\nEr kommt\tEr kommt nicht\tcontradictory\n".encode())
    data = load_nli_data([str(path)], XNLI_LABEL2ID)
    assert data.to_list() == [{"premise": "Er kommt", "hypothesis": "Er kommt nicht", "label": 2, "language": "de"}]
