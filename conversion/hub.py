"""Publish a converted repository to the Hugging Face Hub in one commit.

The token is whatever huggingface_hub finds (`HF_TOKEN`, `hf auth login`'s cache) unless one is
passed; it is handed to huggingface_hub only and never printed or logged here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

REQUIRED_FILES = ("config.json", "README.md")
# Never uploaded: hidden files and folders (.git/, .cache/huggingface/ left by `hf download --local-dir`,
# .ipynb_checkpoints/, unfinished `.OUT.partial-*` outputs) and Trainer's resumable state, which is large,
# private to a run, and not part of a model (checkpoint-N/, optimizer and scheduler states, RNG states).
IGNORED_PATTERNS = [".*", "*/.*", "checkpoint-*", "optimizer.pt", "scheduler.pt", "rng_state*.pth"]


def _uploaded_files(folder: Path) -> tuple[list[str], int]:
    """Paths (relative, posix) to upload, and how many files were left out."""
    every = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    kept = [
        path
        for path in every
        if not any(fnmatch.fnmatchcase(part, pattern) for part in path.split("/") for pattern in IGNORED_PATTERNS)
    ]
    return kept, len(every) - len(kept)


def _folder_operations(folder: Path, paths: list[str]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)) for path in paths]


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> str:
    """Upload every file of `folder` to `repo_id` in a single commit; returns the commit (or PR) URL.

    The repo is created if missing (`private` applies then). `revision` names a branch, created from
    the default branch if it does not exist; `create_pr` opens a pull request against it (or the
    default branch) instead of committing directly.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OSError(f"{folder} is not a directory; pass the output directory of `xlmr convert`.")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise OSError(f"{folder} has no {', '.join(missing)}; is it a converted repository (`xlmr convert`)?")
    paths, left_out = _uploaded_files(folder)
    operations = _folder_operations(folder, paths)
    skipped = f" (left out {left_out} hidden or training-state files)" if left_out else ""
    log(f"uploading {len(operations)} files from {folder} to {repo_id} in one commit{skipped}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        # One create_commit (not upload_folder, which may split large folders into several commits).
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload XLM-R converted from fairseq ({folder.name})",
            revision=revision,
            create_pr=create_pr,
        )
    except OSError:
        raise  # HfHubHTTPError (401, 403, 404 ...) is an OSError with a readable message
    except Exception as error:
        # Transport failures (refused connection, DNS, timeouts) come from the HTTP client huggingface_hub
        # uses (httpx); give them the same one-line form instead of a traceback.
        if type(error).__module__.split(".")[0].startswith("httpx"):
            raise OSError(f"cannot reach the Hub at {api.endpoint}: {error}") from error
        raise
    return commit.pr_url or commit.commit_url


__all__ = ["push_to_hub"]
