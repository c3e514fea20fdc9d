"""Small utilities shared by the test modules (import as `from helpers import ...`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prepended to code run by `run_without_package`: a meta-path finder that refuses this repository's
# packages, so whatever the subprocess builds can only come from files saved beside the weights.
_BLOCK_PACKAGE = textwrap.dedent(
    """
    import sys
    class _BlockRepoPackages:
        blocked = ("modeling_xlmr", "conversion", "model_cards")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked in this process")
            return None
    sys.meta_path.insert(0, _BlockRepoPackages())
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != REPO_ROOT]
    try:
        import modeling_xlmr
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_xlmr is importable: the remote-code check would prove nothing")
    """
)


def run_without_package(code: str, cwd: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python that provably cannot import this repository's packages."""
    prelude = f"import os\nREPO_ROOT = {REPO_ROOT!r}\n" + _BLOCK_PACKAGE
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, cwd=cwd or "/", env=env, timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def tiny_config_kwargs(**overrides) -> dict:
    """A tiny XLM-R shape shared by tests (the real special-token ids, a small vocabulary)."""
    return {
        "vocab_size": 120,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        **overrides,
    }


def random_padded_batch(
    lengths: list[int], vocab_size: int, pad_id: int = 1, padding_side: str = "right", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> random tokens </s>` rows of the given total lengths, padded with pad_id."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens = torch.randint(4, vocab_size, (length,), generator=generator)
        tokens[0], tokens[-1] = 0, 2
        if padding_side == "right":
            input_ids[row, :length] = tokens
        else:
            input_ids[row, width - length :] = tokens
    return input_ids, input_ids.ne(pad_id).long()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def accelerate_launch_command(launch_options: list[str], cli_args: list[str]) -> list[str]:
    """`accelerate launch LAUNCH_OPTIONS -m modeling_xlmr.cli CLI_ARGS`, with the settings accelerate would
    otherwise take from an interactive config answered on the command line."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", *launch_options,
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "modeling_xlmr.cli", *cli_args,
    ]
