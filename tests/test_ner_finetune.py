"""`xlmr finetune --task ner` / `xlmr evaluate --task ner` / `xlmr classify --task ner`: a tiny XLM-R learns a
synthetic multilingual NER corpus (`tests/support/ner.py`: English, German, Russian; PER, ORG, LOC, multi-word).

Scores are recomputed here with seqeval from the saved predictions and the held-back data, never taken from what
the command reports about itself; held-back data includes sentences far longer than 512 pieces.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from seqeval.metrics import f1_score

from modeling_xlmr.cli import main
from modeling_xlmr.ner.tags import entities_of
from tests.support.ner import LABELS, long_sentences, read_jsonl, sentences, write_conll, write_jsonl


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ner_data")
    train = sentences(600, seed=0)
    held_back = sentences(150, seed=1) + long_sentences(3, seed=2)
    return {
        # English as CoNLL-2003 (-DOCSTART-, four columns; the language from the file name), the others as WikiANN
        "train": [
            write_conll(directory / "train.en.conll", [row for row in train if row["language"] == "en"]),
            write_conll(directory / "wikiann.train", [row for row in train if row["language"] != "en"], wikiann=True),
        ],
        "test": write_jsonl(directory / "test.jsonl", held_back, tag_ids=True),  # tag ids: names from the model
        "test_rows": held_back,
        "small_train": write_jsonl(directory / "small.jsonl", train[:64]),
        "small_test": write_jsonl(directory / "small_test.jsonl", held_back[:30]),
    }


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir, ner_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ner_finetuned") / "tiny-ner"
    started = time.perf_counter()
    status = main(
        ["finetune", "--task", "ner", "--model", tiny_model_dir, "--output-dir", str(out)]
        + ["--train-file", *ner_files["train"], "--eval-file", ner_files["test"], "--labels", ",".join(LABELS)]
        + ["--learning-rate", "1e-2", "--num-train-epochs", "3", "--batch-size", "16", "--weight-decay", "0"]
        + ["--max-length", "64", "--stride", "16", "--save-strategy", "no", "--seed", "0", "--use-cpu"]
    )
    print(f"\nNER fine-tuning + evaluation took {time.perf_counter() - started:.1f}s")
    assert status == 0
    return str(out)


def test_learns_the_corpus_scored_independently_from_saved_predictions(finetuned, ner_files, real_tokenizer):
    rows = ner_files["test_rows"]
    saved = read_jsonl(os.path.join(finetuned, "eval_predictions.jsonl"))
    assert [row["words"] for row in saved] == [row["tokens"] for row in rows]  # every sentence, in order
    assert all(len(row["tags"]) == len(row["words"]) for row in saved)  # one tag per word, long ones included
    gold = [row["ner_tags"] for row in rows]
    predicted = [row["tags"] for row in saved]

    overall = f1_score(gold, predicted)
    print(f"\nentity F1 recomputed by seqeval: {overall:.4f}")
    assert overall >= 0.9
    results = read_json(os.path.join(finetuned, "eval_results.json"))
    assert results["eval_f1"] == pytest.approx(overall, abs=1e-9)
    for language in ("en", "de", "ru"):
        keep = [index for index, row in enumerate(rows) if row["language"] == language]
        score = f1_score([gold[i] for i in keep], [predicted[i] for i in keep])
        print(f"  {language}: {score:.4f}")
        assert results[f"eval_{language}_f1"] == pytest.approx(score, abs=1e-9)
        assert score >= 0.85

    # the long sentences really are longer than the model and still scored word for word
    long_rows = rows[-3:]
    assert all(len(real_tokenizer(row["tokens"], is_split_into_words=True)["input_ids"]) > 512 for row in long_rows)
    assert f1_score(gold[-3:], predicted[-3:]) >= 0.85

    all_results = read_json(os.path.join(finetuned, "all_results.json"))
    assert {key: all_results[key] for key in results} == results and "train_loss" in all_results


def test_table_card_and_labels(finetuned):
    table = read_json(os.path.join(finetuned, "ner_f1.json"))
    with open(os.path.join(finetuned, "ner_f1.md"), encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    header, row = [cell.strip() for cell in lines[0].split("|")], [cell.strip() for cell in lines[2].split("|")]
    assert header == ["Model", "en", "de", "ru", "avg"]  # the paper's order (en first), then the average
    assert row[0] == "`tiny-ner` _(TRANSLATE-TRAIN-ALL)_"
    for language, cell in zip(header[1:4], row[1:4]):
        assert float(cell) == pytest.approx(100 * table["f1"][language], abs=0.051)
    assert float(row[4]) == pytest.approx(100 * table["average"], abs=0.051)

    from huggingface_hub import ModelCard

    card = ModelCard.load(os.path.join(finetuned, "README.md"))
    found = {result.dataset_config: result for result in card.data.eval_results}
    assert set(found) == {"en", "de", "ru", None}
    assert all(r.task_type == "token-classification" and r.metric_type == "f1" for r in found.values())
    assert found["ru"].metric_value == pytest.approx(table["f1"]["ru"], abs=1e-4)
    assert read_json(os.path.join(finetuned, "config.json"))["id2label"] == {str(i): t for i, t in enumerate(LABELS)}


def test_evaluate_reproduces_the_scores(finetuned, ner_files, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--task", "ner", "--model", finetuned, "--eval-file", ner_files["test"]]
                + ["--max-length", "64", "--stride", "16", "--output-dir", str(out), "--use-cpu"]) == 0  # fmt: skip
    before = read_json(os.path.join(finetuned, "eval_results.json"))
    after = read_json(out / "eval_results.json")
    assert after["eval_f1"] == pytest.approx(before["eval_f1"], abs=1e-9)
    assert after["eval_ru_f1"] == pytest.approx(before["eval_ru_f1"], abs=1e-9)
    assert read_jsonl(out / "eval_predictions.jsonl") == read_jsonl(os.path.join(finetuned, "eval_predictions.jsonl"))


def test_classify_tags_every_word_and_finds_entities_with_offsets(finetuned, ner_files, tmp_path):
    rows = ner_files["test_rows"][-3:] + ner_files["test_rows"][:12]  # three texts over 512 pieces first
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(" ".join(row["tokens"]) + "\n" for row in rows), encoding="utf-8")
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(
        "".join(json.dumps({"id": f"s{i}", "tokens": row["tokens"]}) + "\n" for i, row in enumerate(rows)),
        encoding="utf-8",
    )
    outputs = {}
    for name, source in (("txt", texts), ("jsonl", tokens)):
        outputs[name] = tmp_path / f"{name}.out.jsonl"
        args = ["classify", "--task", "ner", "--model", finetuned, "--input", str(source)]
        assert main([*args, "--output", str(outputs[name]), "--no-progress"]) == 0  # windows: 512 tokens, stride 128
    from_text, from_tokens = read_jsonl(outputs["txt"]), read_jsonl(outputs["jsonl"])
    assert [row["id"] for row in from_tokens] == [f"s{i}" for i in range(len(rows))]
    for row, predicted, same in zip(rows, from_text, from_tokens):
        assert predicted["words"] == row["tokens"] and len(predicted["tags"]) == len(row["tokens"])
        assert same["tags"] == predicted["tags"]
        assert len(predicted["entities"]) == len(entities_of(predicted["tags"]))
        for entity in predicted["entities"]:
            assert predicted["text"][entity["start"] : entity["end"]] == entity["text"]
    assert f1_score([row["ner_tags"] for row in rows], [row["tags"] for row in from_text]) >= 0.85


def test_the_saved_model_runs_in_the_token_classification_pipeline(finetuned, ner_files):
    from transformers import pipeline

    tagger = pipeline("token-classification", model=finetuned, aggregation_strategy="simple", trust_remote_code=True)
    assert type(tagger.model).__name__ == "XLMRForTokenClassification"
    for row in ner_files["test_rows"][:6]:
        text = " ".join(row["tokens"])
        groups = tagger(text)
        for group in groups:
            assert 0 <= group["start"] < group["end"] <= len(text)
        starts = [
            sum(len(word) + 1 for word in row["tokens"][: entity.start]) for entity in entities_of(row["ner_tags"])
        ]
        for entity, start in zip(entities_of(row["ner_tags"]), starts):
            # the entity's first word starts inside a group of its type (its space may open the group)
            assert any(g["entity_group"] == entity.type and g["start"] <= start < g["end"] for g in groups), text
