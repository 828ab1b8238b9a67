"""Safe file creation shared by everything that writes: images, checkpoints, JSON results."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import LiifError, one_line


def create_temp(path: Path) -> tuple[int, Path]:
    """Create a hidden temporary file next to `path` (same folder, so the final move is atomic).

    Unlike tempfile.mkstemp (mode 0600), it gets the permissions the user's umask gives new files.
    """
    temp = path.with_name(f".liif-{secrets.token_hex(8)}{path.suffix}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        return os.open(temp, flags, 0o666), temp
    except OSError as exc:
        raise LiifError(f"{path}: cannot create a file in {path.parent} "
                        f"({one_line(exc)})") from exc
