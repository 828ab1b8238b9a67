"""Safe file creation shared by everything that writes: images, checkpoints, JSON results.

Files are written to a hidden temporary file in the target's folder, then moved into place.
A process killed mid-write (kill -9, power loss) cannot remove its temporary file, so the
name records who made it, `.liif-<pid>-<host>-<random>`: the first temporary file a later run
creates in a folder first removes those whose process, on this host, no longer exists.

Concurrent runs (two `liif resize` on the same folders) share the work through claims: before
rendering an output, a run creates `.<name>.liif-claim` beside it, exclusively (O_EXCL), holding
its pid and host; another run skips an output claimed by a live process. A claim is removed when
its output is done or failed; one left by a dead process is removed by the next run that meets it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
import zlib
from pathlib import Path

from .errors import LiifError, one_line

TEMP_PREFIX = ".liif-"
CLAIM_SUFFIX = ".liif-claim"
_UNWRITTEN_CLAIM_S = 60  # an empty claim older than this lost its writer before it wrote
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
    try:
        claims = [entry.name for entry in os.scandir(folder)
                  if entry.name.startswith(".") and entry.name.endswith(CLAIM_SUFFIX)]
    except OSError:
        claims = []
    for name in claims:
        if _stale_claim(folder / name) and _unlink(folder / name):
            removed.append(folder / name)
    return removed


def claim_path(target: Path) -> Path:
    """The claim file of an output: hidden, beside it."""
    return target.with_name(f".{target.name}{CLAIM_SUFFIX}")


def claim(target: Path) -> bool:
    """Claim `target` for this process before rendering it: True if this process now holds
    the claim (release it with `release`), False if another live process does.

    A claim of a dead process of this host is removed and taken over. (Two runs meeting the
    same stale claim at the same instant may both take it over: the output is then rendered
    twice, still written atomically, and the second run finds it done.)
    """
    path = claim_path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(2):
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            if not _stale_claim(path):
                return False
            _unlink(path)
            continue
        except OSError as exc:
            raise LiifError(f"{target}: cannot create a file in {target.parent} "
                            f"({one_line(exc)})") from exc
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()} {_HOST}\n")
        return True
    return False


def release(target: Path) -> None:
    """Remove this process's claim of `target` (see `claim`); never another's."""
    path = claim_path(target)
    if _claim_owner(path) == (os.getpid(), _HOST):
        _unlink(path)


def _claim_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a claim file, or None if missing, empty or unreadable."""
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _stale_claim(path: Path) -> bool:
    """Whether the claim at `path` belongs to a process of this host that no longer exists
    (or was left empty by a writer killed before it wrote, long enough ago)."""
    owner = _claim_owner(path)
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime > _UNWRITTEN_CLAIM_S
        except OSError:
            return False
    pid, host = owner
    return host == _HOST and not _alive(pid)


def _unlink(path: Path) -> bool:
    """Remove `path`; False if it was gone already or cannot be removed."""
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


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
