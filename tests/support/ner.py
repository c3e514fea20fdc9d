"""A synthetic multilingual NER corpus for the `xlmr finetune --task ner` tests.

Rule-based, so a tiny model can learn it: sentences fill language-specific templates with entities drawn from
fixed lists (PER always two words, LOC and ORG one to three), in English, German and Russian (Cyrillic). Every
entity word belongs to one entity type and one position (B- or I-), so its tag follows from the word and its
left neighbour. Held-back sentences come from another random stream, and long sentences (several hundred
words, well over 512 pieces) from a third.
"""

from __future__ import annotations

import json
import random

LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

LEXICON = {
    "en": {
        "PER": [("John", "Smith"), ("Mary", "Johnson"), ("Peter", "Walker"), ("Linda", "Harris"), ("Oliver", "Clark")],
        "ORG": [("Acme",), ("Northwind", "Traders"), ("Blue", "River", "Bank"), ("Contoso",), ("Fabrikam", "Labs")],
        "LOC": [("London",), ("New", "York"), ("Boston",), ("Cape", "Town"), ("Sydney",)],
        "templates": [
            "{PER} works for {ORG} in {LOC} .",
            "yesterday {PER} flew to {LOC} with a colleague .",
            "the office of {ORG} is near the station in {LOC} .",
            "{PER} met {PER} at the {ORG} meeting .",
        ],
    },
    "de": {
        "PER": [
            ("Anna", "Schmidt"),
            ("Jonas", "Becker"),
            ("Lena", "Fischer"),
            ("Felix", "Wagner"),
            ("Marie", "Hofmann"),
        ],
        "ORG": [("Siemens",), ("Deutsche", "Bahn"), ("Rheinische", "Werke", "AG"), ("Lufthansa",), ("Bosch", "Gruppe")],
        "LOC": [("Berlin",), ("Bad", "Homburg"), ("Hamburg",), ("Frankfurt", "am", "Main"), ("Dresden",)],
        "templates": [
            "{PER} arbeitet für {ORG} in {LOC} .",
            "gestern fuhr {PER} mit dem Zug nach {LOC} .",
            "das Büro von {ORG} liegt am Bahnhof in {LOC} .",
            "{PER} traf {PER} bei der Sitzung von {ORG} .",
        ],
    },
    "ru": {
        "PER": [
            ("Иван", "Петров"),
            ("Ольга", "Смирнова"),
            ("Сергей", "Иванов"),
            ("Анна", "Козлова"),
            ("Павел", "Орлов"),
        ],
        "ORG": [("Газпром",), ("Аэрофлот",), ("Сбер", "Банк"), ("Русские", "Железные", "Дороги"), ("Яндекс",)],
        "LOC": [("Москва",), ("Нижний", "Новгород"), ("Казань",), ("Ростов", "на", "Дону"), ("Самара",)],
        "templates": [
            "{PER} работает в компании {ORG} в городе {LOC} .",
            "вчера {PER} поехал в {LOC} на поезде .",
            "офис {ORG} находится у вокзала в {LOC} .",
            "{PER} встретил {PER} на собрании {ORG} .",
        ],
    },
}
LANGUAGES = tuple(LEXICON)


def sentence(rng: random.Random, language: str) -> tuple[list[str], list[str]]:
    """One template filled with random entities: (words, IOB2 tags)."""
    lexicon = LEXICON[language]
    words, tags = [], []
    for part in rng.choice(lexicon["templates"]).split():
        if part.startswith("{"):
            kind = part.strip("{}")
            entity = rng.choice(lexicon[kind])
            words += entity
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        else:
            words.append(part)
            tags.append("O")
    return words, tags


def sentences(count: int, seed: int, parts: tuple[int, int] = (1, 3), languages=LANGUAGES) -> list[dict]:
    """`count` rows, languages in turn, each of `parts[0]` to `parts[1]` filled templates run together (as
    sentences of a document split badly would be)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        language = languages[index % len(languages)]
        words, tags = [], []
        for _ in range(rng.randint(*parts)):
            more_words, more_tags = sentence(rng, language)
            words += more_words
            tags += more_tags
        rows.append({"tokens": words, "ner_tags": tags, "language": language})
    return rows


def long_sentences(count: int, seed: int, parts: int = 40) -> list[dict]:
    """Rows of `parts` templates run together: hundreds of words, well over 512 pieces."""
    return sentences(count, seed, (parts, parts))


def write_conll(path, rows, wikiann: bool = False, docstart: bool = True) -> str:
    """CoNLL-2003 layout (token, two dummy columns, tag; -DOCSTART- first) or WikiANN's (`lang:token tag`)."""
    with open(path, "w", encoding="utf-8") as stream:
        if docstart and not wikiann:
            stream.write("-DOCSTART- -X- -X- O\n\n")
        for row in rows:
            stream.writelines(
                f"{row['language']}:{word}\t{tag}\n" if wikiann else f"{word} X _ {tag}\n"
                for word, tag in zip(row["tokens"], row["ner_tags"])
            )
            stream.write("\n")
    return str(path)


def write_jsonl(path, rows, tag_ids: bool = False) -> str:
    with open(path, "w", encoding="utf-8") as stream:
        for row in rows:
            tags = [LABELS.index(tag) for tag in row["ner_tags"]] if tag_ids else row["ner_tags"]
            stream.write(json.dumps({**row, "ner_tags": tags}, ensure_ascii=False) + "\n")
    return str(path)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
