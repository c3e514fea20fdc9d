"""The package's layout holds its promises: the remote-code set is exactly the model package's root modules,
and every layer imports only the layers below it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_xlmr import XLMRForMaskedLM
from tests.support.models import tiny_config
from tests.support.processes import REPO_ROOT, run_without_package

PACKAGE = Path(REPO_ROOT) / "modeling_xlmr"
ROOT_MODULES = sorted(path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py")

# Which of the project's import roots each layer may use (a layer may always import itself).
ALLOWED = {
    "modeling_xlmr (root)": set(),
    "modeling_xlmr.common": set(),
    "modeling_xlmr.inference": {"modeling_xlmr (root)", "modeling_xlmr.common"},
    "modeling_xlmr.hub": {"modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.inference"},
    "modeling_xlmr.training": {"modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.hub", "model_cards"},
    "modeling_xlmr.nli": {
        "modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.inference", "modeling_xlmr.hub",
        "modeling_xlmr.training", "model_cards",
    },
    "modeling_xlmr.ner": {
        "modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.inference", "modeling_xlmr.hub",
        "modeling_xlmr.training", "model_cards",
    },
    "modeling_xlmr.ray_data": {"modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.inference", "modeling_xlmr.hub"},
    "model_cards": set(),
    "conversion": {"modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.hub", "model_cards"},
    "modeling_xlmr.cli": {
        "modeling_xlmr (root)", "modeling_xlmr.common", "modeling_xlmr.inference", "modeling_xlmr.hub",
        "modeling_xlmr.training", "modeling_xlmr.nli", "modeling_xlmr.ner", "modeling_xlmr.ray_data", "conversion",
        "model_cards",
    },
}  # fmt: skip


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("conversion", "model_cards"):
        return parts[0]
    if parts[0] != "modeling_xlmr":
        return None
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return f"modeling_xlmr.{parts[1]}"
    return "modeling_xlmr (root)"


def imported_modules(path: Path, module: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved), at any depth of the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def project_modules():
    for root in ("modeling_xlmr", "conversion", "model_cards"):
        for path in sorted((Path(REPO_ROOT) / root).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield path, ".".join(parts)


def test_every_layer_imports_only_the_layers_below_it():
    violations = []
    for path, module in project_modules():
        if module == "modeling_xlmr":
            continue  # the package's face: lazy re-exports of every layer's public names
        own = layer_of(module)
        for name in imported_modules(path, module):
            used = layer_of(name)
            if used is not None and used != own and used not in ALLOWED[own]:
                violations.append(f"{path.relative_to(REPO_ROOT)} ({own}) imports {name} ({used})")
    assert not violations, "\n".join(violations)


def test_remote_code_modules_import_only_each_other():
    for name in ROOT_MODULES:
        module = f"modeling_xlmr.{name[:-3]}"
        ours = {
            imported for imported in imported_modules(PACKAGE / name, module) if imported.startswith("modeling_xlmr")
        }
        outside = {imported for imported in ours if layer_of(imported) != "modeling_xlmr (root)"}
        assert not outside, f"{name} imports {outside}: it would not run beside the weights"


def python_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.suffix == ".py")


def test_saved_model_and_saved_tokenizer_each_hold_exactly_the_remote_code_set(real_tokenizer, tmp_path):
    model_dir, tokenizer_dir = tmp_path / "model", tmp_path / "tokenizer"
    XLMRForMaskedLM(tiny_config(vocab_size=250002)).save_pretrained(model_dir)
    real_tokenizer.save_pretrained(tokenizer_dir)
    assert python_files(model_dir) == ROOT_MODULES
    assert python_files(tokenizer_dir) == ROOT_MODULES

    # Each loads where this repository cannot be imported: the saved files are all it needs.
    result = run_without_package(f"""
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        model = AutoModelForMaskedLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained({str(tokenizer_dir)!r}, trust_remote_code=True)
        batch = tokenizer(["Hello world!", "Bonjour"], padding=True, return_tensors="pt")
        print(type(model).__name__, type(tokenizer).__name__, batch["input_ids"][0].tolist(), model(**batch).logits.shape[-1])
    """)
    assert result.stdout.split() == [
        "XLMRForMaskedLM",
        "XLMRTokenizerFast",
        "[0,",
        "35378,",
        "8999,",
        "38,",
        "2]",
        "250002",
    ]


def test_a_converted_repo_holds_exactly_the_remote_code_set(fairseq_checkpoint, tmp_path):
    from conversion import convert_fairseq_checkpoint

    output = convert_fairseq_checkpoint(fairseq_checkpoint(), tmp_path / "repo", log=lambda _: None).output
    assert python_files(output) == ROOT_MODULES


def run_cli(args: list[str], blocked: str = "") -> subprocess.CompletedProcess:
    """`python -m modeling_xlmr.cli ARGS` in a fresh process, optionally unable to import `blocked`."""
    prelude = ""
    if blocked:
        prelude = (
            "import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] == {blocked!r}: raise ModuleNotFoundError(name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
        )
    code = (
        prelude
        + "import runpy, sys\nsys.argv = ['xlmr', *sys.argv[1:]]\nrunpy.run_module('modeling_xlmr.cli', run_name='__main__')"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def test_finetune_without_its_extra_is_one_line_naming_the_install_command(tiny_model_dir, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n', encoding="utf-8")
    args = ["finetune", "--model", tiny_model_dir, "--output-dir", str(tmp_path / "out"), "--train-file", str(train)]
    result = run_cli(args, blocked="datasets")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "xlmr finetune: error: fine-tuning and evaluation (xlmr finetune / xlmr evaluate) needs the optional "
        "package 'datasets': pip install 'xlmr[finetune]' (from a source checkout: pip install -e '.[finetune]')."
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["--help"], ["extract", "--help"], ["finetune", "--help"]])
def test_the_module_entry_point_runs(command):
    result = run_cli(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: xlmr")


def test_the_command_line_parser_loads_no_model_code():
    # `xlmr --help`, `xlmr push` and every argument error pay only for the parser (was ~8 s, transformers and the
    # model included); a sub-command loads those when it runs.
    code = (
        "import sys; from modeling_xlmr.cli import build_parser; build_parser(); "
        "print([name for name in ('transformers', 'modeling_xlmr.modeling_xlmr') if name in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
