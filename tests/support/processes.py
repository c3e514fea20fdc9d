"""Running code in other processes: without this repository importable, or under `accelerate launch`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
        capture_output=True,
        text=True,
        cwd=cwd or "/",
        env=env,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def accelerate_launch_command(launch_options: list[str], cli_args: list[str]) -> list[str]:
    """`accelerate launch LAUNCH_OPTIONS -m modeling_xlmr.cli CLI_ARGS`, with the settings accelerate would
    otherwise take from an interactive config answered on the command line."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launch_options,
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "modeling_xlmr.cli",
        *cli_args,
    ]
