"""Writing outputs so that nobody ever sees half of one, and nothing the user did not name is lost.

A file goes to a temporary name in the target's directory and is renamed onto the target only when
complete. A directory is built in a scratch folder beside its target (`.OUT.PURPOSE-PID-xxxx`, removed
by the next run once its process is gone) and moved in when finished, the old one kept until the new
one is in place. An existing output is replaced only when the user says so and only where it holds
what the command itself writes. Everything gets the modes a plain `open`/`mkdir` would give it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# A write that failed for want of room (not because the input is bad).
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


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


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} TB"


def is_no_room_error(error: BaseException) -> bool:
    """A full disk, a quota or a file-size limit, whether raised as an OSError or as a writer's own error
    whose text carries the OS error (safetensors reports "No space left on device (os error 28)")."""
    if isinstance(error, OSError) and error.errno in NO_ROOM_ERRNOS:
        return True
    return any(f"(os error {number})" in str(error) for number in NO_ROOM_ERRNOS)


def check_output_directory(
    output: Path, sources: Iterable[Path], overwrite: bool, force: bool, ours: Callable[[str], bool]
) -> None:
    """Refuse an output directory that would destroy something the user did not name.

    OUT may not be a source, contain one or lie inside one. An existing OUT is replaced only with
    `overwrite`, and only when every entry in it is something this command writes (`ours(name)`);
    with `force` as well, its other entries are kept beside the new output.
    """
    target = Path(os.path.realpath(output))
    for source in sources:
        source = Path(os.path.realpath(source))
        if target == source:
            raise ValueError(f"OUT {output} is the source itself; write the conversion to a new directory.")
        if target in source.parents:
            raise ValueError(
                f"OUT {output} contains the source {source}; replacing OUT would delete it. Choose another OUT."
            )
        if source in target.parents:
            raise ValueError(f"OUT {output} lies inside the source {source}; choose an OUT outside it.")
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"OUT {output} is a file; pass a directory name.")
    if not overwrite:
        raise ValueError(f"{output} already exists; pass --overwrite to replace it.")
    foreign = sorted(name for name in os.listdir(target) if not ours(name))
    if foreign and not force:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(
            f"{output} holds files this command did not write ({shown}); --overwrite replaces only its own "
            "output: move them away, choose another OUT, or add --force to keep them beside the new output."
        )


def staging_directory(output: Path, purpose: str) -> Path:
    """A new hidden scratch directory beside `output` (`.OUT.PURPOSE-PID-xxxx`), after removing those that
    runs on the same OUT left behind when they were killed (their process is gone)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(output)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.{purpose}-{os.getpid()}-", dir=output.parent))


def remove_abandoned_staging(output: Path) -> list[Path]:
    """Remove the scratch folders of runs on `output` whose process is gone. Folders named by earlier
    versions carry no process id (`.OUT.partial-xxxx`): no run of this version is using them."""
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.(?:partial|source|old)-(?:(\d+)-)?[^-/]+$")
    removed = []
    for path in output.parent.iterdir() if output.parent.is_dir() else ():
        match = pattern.match(path.name)
        if not match or not path.is_dir():
            continue
        if match.group(1) is None or not _process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def install_directory(built: Path, output: Path, ours: Callable[[str], bool]) -> None:
    """Move the finished directory `built` to `output`. An old `output` is kept until the new one is in
    place; entries of it that are not `ours` (allowed by `check_output_directory`'s `force`) stay."""
    if not output.exists():
        built.rename(output)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-{os.getpid()}-", dir=output.parent))
    if all(ours(name) for name in os.listdir(output)):
        output.rename(retired / output.name)
        built.rename(output)
    else:
        for name in os.listdir(output):
            if ours(name):
                (output / name).rename(retired / name)
        for path in built.iterdir():
            path.rename(output / path.name)
    shutil.rmtree(retired, ignore_errors=True)


__all__ = [
    "apply_umask",
    "atomic_file",
    "check_output_directory",
    "current_umask",
    "human_size",
    "install_directory",
    "is_no_room_error",
    "remove_abandoned_staging",
    "staging_directory",
    "write_text_atomically",
]
