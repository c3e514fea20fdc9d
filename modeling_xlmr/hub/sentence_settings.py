"""A repo's sentence-transformers settings: how it turns token states into one embedding, read and written.

Embedding models of the XLM-R family (multilingual-e5, bge-m3, paraphrase-multilingual) ship their pooling,
normalisation, length limit and prompts as sentence-transformers files beside the weights:

- `modules.json`: the module pipeline (Transformer, Pooling, optionally Normalize);
- the Pooling module's `config.json` (`1_Pooling/` usually): `pooling_mode` (sentence-transformers >= 6) or
  the older `pooling_mode_cls_token` / `pooling_mode_mean_tokens` / ... flags, and `include_prompt`;
- `sentence_bert_config.json`: `max_seq_length` (older files);
- `config_sentence_transformers.json`: `prompts` ({"query": "query: ", ...}) and `default_prompt_name`.

`read_sentence_settings` understands both generations; `write_sentence_transformers_files` writes the older,
widely understood layout (every sentence-transformers release reads it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import cached_file

MODULES_FILE = "modules.json"
SETTINGS_FILE = "config_sentence_transformers.json"
TRANSFORMER_FILE = "sentence_bert_config.json"
POOLING_DIRECTORY = "1_Pooling"
NORMALIZE_DIRECTORY = "2_Normalize"
SUPPORTED_POOLING = ("cls", "mean")
SENTENCE_TRANSFORMERS_NAMES = (MODULES_FILE, SETTINGS_FILE, TRANSFORMER_FILE, POOLING_DIRECTORY, NORMALIZE_DIRECTORY)
_FLAG_OF_POOLING = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens"}


@dataclass
class SentenceSettings:
    """How a repo's sentence embedding is made: `pooling` ("cls" or "mean"), `normalize`, `max_length`
    (tokens, `<s>`/`</s>` included; None = the model's own limit), `prompts` and the default prompt's name."""

    pooling: str = "cls"
    normalize: bool = False
    max_length: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    def prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str:
        """The text put before every input: `prompt` as given, the named prompt, or the default one."""
        if prompt is not None and prompt_name is not None:
            raise ValueError("pass either a prompt or a prompt name (--prompt or --prompt-name), not both.")
        if prompt is not None:
            return prompt
        name = prompt_name or self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            known = ", ".join(map(repr, self.prompts)) or "none"
            raise ValueError(f"no prompt named {name!r} in this repo (prompts: {known}); pass --prompt TEXT instead.")
        return self.prompts[name]


def read_sentence_settings(name_or_path: str, revision: str | None = None) -> SentenceSettings | None:
    """The repo's sentence-transformers settings, or None when it has no `modules.json`."""
    modules = _read_json(name_or_path, MODULES_FILE, revision)
    if modules is None:
        return None
    settings = SentenceSettings(pooling="mean")  # sentence-transformers' own default
    for module in modules:
        kind = module.get("type", "").rpartition(".")[2]
        if kind == "Pooling":
            pooling = _read_json(name_or_path, f"{module.get('path') or ''}/config.json".lstrip("/"), revision)
            settings.pooling = _pooling_mode(pooling or {})
        elif kind == "Normalize":
            settings.normalize = True
    transformer = _read_json(name_or_path, TRANSFORMER_FILE, revision) or {}
    if transformer.get("max_seq_length"):
        settings.max_length = int(transformer["max_seq_length"])
    extra = _read_json(name_or_path, SETTINGS_FILE, revision) or {}
    settings.prompts = {name: text for name, text in (extra.get("prompts") or {}).items() if text}
    settings.default_prompt_name = extra.get("default_prompt_name")
    return settings


def _pooling_mode(config: dict) -> str:
    if config.get("include_prompt", True) is False:
        raise ValueError(
            "this repo's pooling leaves the prompt's tokens out (include_prompt: false), which embed/extract do "
            "not reproduce; use sentence-transformers for it."
        )
    if isinstance(config.get("pooling_mode"), str):
        modes = [config["pooling_mode"]]
    else:
        modes = [mode for mode, flag in _FLAG_OF_POOLING.items() if config.get(flag)]
        modes += [
            key
            for key, value in config.items()
            if key.startswith("pooling_mode_") and value and key not in _FLAG_OF_POOLING.values()
        ]
    modes = ["cls" if mode == "cls_token" else "mean" if mode == "mean_tokens" else mode for mode in modes]
    if len(modes) != 1 or modes[0] not in SUPPORTED_POOLING:
        raise ValueError(
            f"this repo pools with {modes or 'nothing'}; embed/extract reproduce only {', '.join(SUPPORTED_POOLING)} "
            "pooling (use sentence-transformers for the others)."
        )
    return modes[0]


def _read_json(name_or_path: str, filename: str, revision: str | None) -> dict | list | None:
    path = cached_file(name_or_path, filename, revision=revision, _raise_exceptions_for_missing_entries=False)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def has_sentence_transformers_files(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MODULES_FILE).is_file()


def write_sentence_transformers_files(
    directory: str | os.PathLike, settings: SentenceSettings, hidden_size: int
) -> None:
    """modules.json, the Pooling (and Normalize) module configs, sentence_bert_config.json and
    config_sentence_transformers.json for `settings`, in the layout every sentence-transformers release reads."""
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIRECTORY, "type": "sentence_transformers.models.Pooling"},
    ]
    if settings.normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": NORMALIZE_DIRECTORY, "type": "sentence_transformers.models.Normalize"}
        )
        (directory / NORMALIZE_DIRECTORY).mkdir(exist_ok=True)
        _write_json(directory / NORMALIZE_DIRECTORY / "config.json", {})
    pooling = {"word_embedding_dimension": hidden_size, "include_prompt": True}
    pooling.update({flag: settings.pooling == mode for mode, flag in _FLAG_OF_POOLING.items()})
    pooling.update({"pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    (directory / POOLING_DIRECTORY).mkdir(exist_ok=True)
    _write_json(directory / POOLING_DIRECTORY / "config.json", pooling)
    _write_json(directory / MODULES_FILE, modules)
    _write_json(directory / TRANSFORMER_FILE, {"max_seq_length": settings.max_length or 512, "do_lower_case": False})
    _write_json(
        directory / SETTINGS_FILE,
        {
            "prompts": settings.prompts,
            "default_prompt_name": settings.default_prompt_name,
            "similarity_fn_name": "cosine",
        },
    )


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = [
    "SENTENCE_TRANSFORMERS_NAMES",
    "SentenceSettings",
    "has_sentence_transformers_files",
    "read_sentence_settings",
    "write_sentence_transformers_files",
]
