"""Safe file creation shared by everything that writes: images, checkpoints, JSON results.

Files are written to a hidden temporary file in the target's folder, then moved into place.
A process killed mid-write (kill -9, power loss) cannot remove its temporary file, so the
name records who made it, `.liif-<pid>-<host>-<random>`: the first temporary file a later run
creates in a folder first removes those whose process, on this host, no longer exists.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import zlib
from pathlib import Path

from .errors import LiifError, one_line

TEMP_PREFIX = ".liif-"
_TEMP_NAME = re.compile(r"\.liif-(\d+)-([0-9a-f]{8})-[0-9a-f]{16}(\.[^.]*)?")
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # same folder, several machines
_swept: set[Path] = set()  # folders already cleaned by this process


def create_temp(path: Path) -> tuple[int, Path]:
    """Create a hidden temporary file next to `path` (same folder, so the final move is atomic).

    Unlike tempfile.mkstemp (mode 0600), it gets the permissions the user's umask gives new files.
    """
    remove_stale_temps(path.parent)
    temp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{_HOST}-{secrets.token_hex(8)}"
                          f"{path.suffix}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        return os.open(temp, flags, 0o666), temp
    except OSError as exc:
        raise LiifError(f"{path}: cannot create a file in {path.parent} "
                        f"({one_line(exc)})") from exc


def remove_stale_temps(folder: Path, *, again: bool = False) -> list[Path]:
    """Remove the temporary files in `folder` left by liif processes of this host that no
    longer exist; never one of a live process. Once per folder and process unless `again`.
    Returns what was removed."""
    key = Path(os.path.abspath(folder))
    if (key in _swept and not again) or os.name != "posix":  # os.kill(pid, 0) probes on POSIX
        return []
    _swept.add(key)
    removed = []
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.startswith(TEMP_PREFIX)]
    except OSError:
        return []
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        if match is None or match.group(2) != _HOST or _alive(int(match.group(1))):
            continue
        try:
            os.unlink(folder / name)
            removed.append(folder / name)
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (a reused id counts as alive: the safe side)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but belongs to someone else, or cannot tell
    return True
