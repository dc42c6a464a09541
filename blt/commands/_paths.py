"""Checks of the files a command will write, made before it does any work."""

from __future__ import annotations

from pathlib import Path

from blt.errors import BLTError


def check_output_file(path: Path | None, flag: str, make_parents: bool = False) -> None:
    """Refuse ``path`` (the value of ``flag``; None: not given) when writing it would fail at the end of the
    work: it is a directory, or its folder is a file or is missing (unless the command makes it)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise BLTError(f"{flag} {path} is a directory; give the name of a file to write")
    folder = path.parent
    while make_parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.exists():
        raise BLTError(f"{flag} {path}: its folder {folder} does not exist; create it or write elsewhere")
    if not folder.is_dir():
        raise BLTError(f"{flag} {path}: {folder} is a file, not a folder")
