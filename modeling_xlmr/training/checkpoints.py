"""Is a Trainer checkpoint whole? Resuming from a truncated one dies deep inside torch or safetensors; this
says which file is damaged, in one line, before training starts."""

from __future__ import annotations

import json
import os
import zipfile


def check_checkpoint_files(directory: str) -> None:
    """Every weight and state file must be whole: safetensors files must hold all the bytes their header
    promises, torch files (zip archives) must pass their CRC checks."""
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        damage = None
        if name.endswith(".safetensors"):
            damage = safetensors_damage(path)
        elif name.endswith((".pt", ".pth", ".bin")):
            damage = torch_file_damage(path)
        if damage:
            raise ValueError(
                f"{path} is damaged ({damage}); resume from an earlier checkpoint-N, or start over without "
                "--resume-from-checkpoint."
            )


def safetensors_damage(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
    except (OSError, ValueError) as error:
        return f"unreadable header: {error}"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if os.path.getsize(path) < 8 + header_size + end:
        return f"{os.path.getsize(path)} bytes, the header describes {8 + header_size + end}"
    return None


def torch_file_damage(path: str) -> str | None:
    if not zipfile.is_zipfile(path):
        return "not a complete torch archive"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return str(error)
    return f"{bad} fails its CRC check" if bad else None


__all__ = ["check_checkpoint_files", "safetensors_damage", "torch_file_damage"]
