"""Synthetic NLI data and a tiny XLM-R for the `xlmr finetune` / `xlmr evaluate` tests.

The synthetic task has a rule a model must read both sentences for, in two "languages":
the hypothesis repeats the premise (entailment), adds a cause the premise does not state (neutral), or
denies it ("it is not true that ..." / "il est faux que ...": contradiction). Held-out pairs come from
a different random stream.
"""

from __future__ import annotations

import csv
import json
import random

import torch

LEXICON = {
    "en": {
        "subjects": [
            "the cat",
            "the dog",
            "my brother",
            "the teacher",
            "a farmer",
            "the child",
            "our neighbour",
            "the doctor",
        ],
        "verbs": ["sees", "likes", "paints", "finds", "calls", "follows", "helps", "visits"],
        "objects": ["the house", "a bird", "the river", "a friend", "the garden", "the car", "a horse", "the city"],
        "denial": "it is not true that ",
        "cause": " because it rains",
    },
    "fr": {
        "subjects": [
            "le chat",
            "le chien",
            "mon frère",
            "le professeur",
            "un fermier",
            "l'enfant",
            "notre voisin",
            "le médecin",
        ],
        "verbs": ["voit", "aime", "peint", "trouve", "appelle", "suit", "aide", "visite"],
        "objects": [
            "la maison",
            "un oiseau",
            "la rivière",
            "un ami",
            "le jardin",
            "la voiture",
            "un cheval",
            "la ville",
        ],
        "denial": "il est faux que ",
        "cause": " parce qu'il pleut",
    },
}
LABELS = ("entailment", "neutral", "contradiction")


def synthetic_pairs(count: int, seed: int, languages=("en", "fr")) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        language = languages[index % len(languages)]
        words = LEXICON[language]
        premise = " ".join(rng.choice(words[part]) for part in ("subjects", "verbs", "objects"))
        label = rng.randrange(3)
        hypothesis = [premise, premise + words["cause"], words["denial"] + premise][label]
        rows.append({"premise": premise, "hypothesis": hypothesis, "label": label, "language": language})
    return rows


def write_jsonl(path, rows, drop=()) -> str:
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(
            json.dumps({k: v for k, v in row.items() if k not in drop}, ensure_ascii=False) + "\n" for row in rows
        )
    return str(path)


def write_xnli_tsv(path, rows) -> str:
    """XNLI-1.0's dev/test layout: a language column, label names in gold_label, the texts in sentence1/2."""
    header = [
        "language",
        "gold_label",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
        "promptID",
        "pairID",
        "genre",
    ]
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
        writer.writerow(header)
        for index, row in enumerate(rows):
            p, h = row["premise"], row["hypothesis"]
            writer.writerow(
                [
                    row["language"],
                    LABELS[row["label"]],
                    f"( {p} )",
                    f"( {h} )",
                    f"(ROOT {p})",
                    f"(ROOT {h})",
                    p,
                    h,
                    index,
                    f"{index}n",
                    "synthetic",
                ]
            )
    return str(path)


def build_tiny_model_dir(directory, real_tokenizer) -> str:
    """A random 'pretrained' XLM-R (masked-LM head, as a converted repo) with the real 250002-piece tokenizer.

    One layer and no dropout: with the real vocabulary the 8M-entry embedding dominates each step's cost,
    and this shape learns the rule within ~60 steps for every seed we tried (two layers sometimes plateau).
    """
    from modeling_xlmr import XLMRConfig, XLMRForMaskedLM

    torch.manual_seed(0)
    config = XLMRConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    XLMRForMaskedLM(config).save_pretrained(directory)
    real_tokenizer.save_pretrained(directory)
    return str(directory)


def build_nli_files(directory) -> dict:
    """Training data as Hub-xnli-schema jsonl (one file per language, tagged LANG=PATH), held-out data as
    an XNLI-1.0 tsv with a language column."""
    train = synthetic_pairs(480, seed=0)
    held_out = synthetic_pairs(301, seed=1)  # odd: DDP evaluation must drop its padding duplicates
    return {
        "train": [
            f"{lang}="
            + write_jsonl(
                directory / f"train.{lang}.jsonl", [r for r in train if r["language"] == lang], drop=("language",)
            )
            for lang in ("en", "fr")
        ],
        "test_tsv": write_xnli_tsv(directory / "xnli.test.tsv", held_out),
        "test_rows": held_out,
        "small_train": write_jsonl(directory / "small.jsonl", train[:64]),
    }


def finetune_args(model, out, train, *extra) -> list[str]:
    return ["finetune", "--model", model, "--output-dir", str(out), "--train-file", *train, *extra]


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def markdown_table(path) -> dict[str, float]:
    """Read the markdown table back: header languages -> the row's percentages."""
    with open(path, encoding="utf-8") as stream:
        lines = [line for line in stream.read().splitlines() if line.strip()]
    header = [cell.strip() for cell in lines[0].split("|")]
    assert lines[1].replace("|", "").replace("-", "") == ""
    row = [cell.strip() for cell in lines[2].split("|")]
    assert header[0] == "Model" and len(row) == len(header)
    return {lang: float(value) for lang, value in zip(header[1:], row[1:])}


def predictions_of(model_dir, rows, remote: bool = True) -> list[int]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=remote).eval()
    batch = tokenizer(
        [r["premise"] for r in rows],
        [r["hypothesis"] for r in rows],
        padding=True,
        return_token_type_ids=False,
        return_tensors="pt",
    )
    with torch.no_grad():
        return model(**batch).logits.argmax(-1).tolist()
