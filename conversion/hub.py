"""Publish a converted repository to the Hugging Face Hub in one commit.

The token is whatever huggingface_hub finds (`HF_TOKEN`, `hf auth login`'s cache) unless one is
passed; it is handed to huggingface_hub only and never printed or logged here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

REQUIRED_FILES = ("config.json", "README.md")


def _folder_operations(folder: Path) -> list[CommitOperationAdd]:
    files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
    return [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in files
    ]


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
    operations = _folder_operations(folder)
    log(f"uploading {len(operations)} files from {folder} to {repo_id} in one commit")
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
