"""Data-file specs shared by the tasks: `PATH` or `LANG=PATH`, the language tagging every row of the file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class DataFile:
    """One data file, optionally tagged with the language of all its rows (`fr=xnli.test.fr.jsonl`)."""

    path: str
    language: str | None = None

    @classmethod
    def parse(cls, spec: str) -> DataFile:
        tag, sep, path = spec.partition("=")
        if sep and LANGUAGE_TAG.match(tag) and not os.path.exists(spec):
            return cls(path=path, language=tag)
        return cls(path=spec)


__all__ = ["LANGUAGE_TAG", "DataFile"]
