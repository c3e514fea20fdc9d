"""Writing files so that nobody ever sees half of one: write beside the target, rename at the end.

A file goes to a temporary name in the target's directory and is renamed onto the target only when
complete; a directory is built beside its target and swapped in, the old one kept until the new one is
in place. Both get the modes a plain `open`/`mkdir` would give them (temporary files are private).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside `path`, renamed onto it only if the block succeeds (else removed)."""
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """`path` holds `text` (UTF-8), or keeps what it held before if writing fails."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)


def apply_umask(directory: Path) -> None:
    """mkdtemp makes a 0700 directory and some writers make 0600 files: give the tree plain modes."""
    umask = current_umask()
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def replace_directory(built: Path, output: Path) -> None:
    """Move the finished directory `built` to `output`; an old `output` is removed only once the new one
    is in place."""
    if not output.exists():
        built.rename(output)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    output.rename(retired / output.name)
    built.rename(output)
    shutil.rmtree(retired, ignore_errors=True)


__all__ = ["apply_umask", "atomic_file", "current_umask", "replace_directory", "write_text_atomically"]
