"""NER tags (IOB2 or IOBES): their parts, the label order, and entities read back from a tag sequence.

A tag is `O` or `PREFIX-TYPE` with PREFIX one of B (begins), I (inside), E (ends), S (single-word entity).
IOB2 data uses B/I only; a label set with any E- or S- tag is IOBES. Entities are decoded here without
seqeval (prediction does not need the `ner` extra); the scores in `metrics` use seqeval itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")
_TAG = re.compile(r"^([BIES])[-_](.+)$")


def split_tag(tag: str) -> tuple[str, str | None]:
    """`B-PER` -> ("B", "PER"), `O` -> ("O", None); anything else raises ValueError."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(f"tag {tag!r} is not O or B-/I-/E-/S-TYPE")
    return match.group(1), match.group(2)


def is_valid_tag(tag: str) -> bool:
    return tag == OUTSIDE or _TAG.match(tag) is not None


def scheme_of(labels: Iterable[str]) -> str:
    """'IOBES' when the labels have an E- or S- tag, else 'IOB2'."""
    return "IOBES" if any(split_tag(label)[0] in ("E", "S") for label in labels) else "IOB2"


def ordered_labels(tags: Iterable[str]) -> list[str]:
    """A stable label order for tags found in data: O first, then by entity type, B, I, E, S within a type."""
    found = set(tags)
    rest = sorted(found - {OUTSIDE}, key=lambda tag: (split_tag(tag)[1], PREFIXES.index(split_tag(tag)[0])))
    return [OUTSIDE, *rest]


def inside_tag(tag: str, labels: Sequence[str]) -> str:
    """The tag the other pieces of a word tagged `tag` get with --label-all-pieces: I- of its type (O stays O).
    Without an I- label for that type the word's own tag is repeated."""
    prefix, entity_type = split_tag(tag)
    if prefix == OUTSIDE:
        return tag
    inside = f"I-{entity_type}"
    return inside if inside in labels else tag


@dataclass(frozen=True)
class Entity:
    """An entity of `type` over words `start` .. `end - 1`."""

    type: str
    start: int
    end: int


def entities_of(tags: Sequence[str]) -> list[Entity]:
    """The entities a tag sequence marks, read as conlleval reads it (and seqeval's default mode): an entity
    starts at B-/S-, at I-/E- after O or after another type, and ends before O, B-, S- or a new type, or
    after E-/S-."""
    entities, start, current = [], None, None
    for index, tag in enumerate([*tags, OUTSIDE]):
        prefix, entity_type = split_tag(tag) if is_valid_tag(tag) else (OUTSIDE, None)
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and entity_type != current)
        if current is not None and (prefix == OUTSIDE or begins):
            entities.append(Entity(current, start, index))
            current = None
        if prefix != OUTSIDE and current is None:
            start, current = index, entity_type
        if prefix in ("E", "S") and current is not None:
            entities.append(Entity(current, start, index + 1))
            current = None
    return entities


__all__ = [
    "OUTSIDE",
    "Entity",
    "entities_of",
    "inside_tag",
    "is_valid_tag",
    "ordered_labels",
    "scheme_of",
    "split_tag",
]
