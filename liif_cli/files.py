"""Safe file creation shared by everything that writes: images, checkpoints, JSON results.

Files are written to a hidden temporary file in the target's folder, then moved into place.
A process killed mid-write (kill -9, power loss) cannot remove its temporary file, so the
name records who made it, `.liif-<pid>-<host>-<random>`: the first temporary file a later run
creates in a folder first removes those whose process, on this host, no longer exists.

Concurrent runs (two `liif resize` on the same folders) share the work through claims: before
rendering an output, a run creates `.<name>.liif-claim` beside it, exclusively (O_EXCL), holding
its pid and host; another run skips an output claimed by a live process. A claim is removed when
its output is done or failed. A claim is also a lease: while the run holds it, a background thread
touches it every CLAIM_REFRESH_S seconds, and a claim not touched for CLAIM_LEASE_S seconds is
taken over by the next run that meets it, whoever wrote it: a run killed with kill -9 in another
PID namespace, container or host (where its pid cannot be probed) blocks no output for long. One
left by a dead process of this host is taken over at once.

Every temporary file and claim this process makes is recorded, so that an interrupted run
(Ctrl-C, SIGTERM) removes whatever the `finally` blocks did not reach: `remove_own_files`.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import re
import secrets
import socket
import stat
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import LiifError, one_line

TEMP_PREFIX = ".liif-"
CLAIM_SUFFIX = ".liif-claim"
_UNWRITTEN_CLAIM_S = 60  # an empty claim older than this lost its writer before it wrote
CLAIM_LEASE_S = 120  # a claim not refreshed for this long is taken over (its run is gone)
CLAIM_REFRESH_S = 15  # how often a run refreshes the claims it holds
_NAME_MAX = 255  # bytes in a file name on nearly every file system (ext4, XFS, APFS, NTFS)
_TEMP_NAME = re.compile(r"\.liif-(\d+)-([0-9a-f]{8})-[0-9a-f]{16}(\.[^.]*)?")
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # same folder, several machines
_swept: set[Path] = set()  # folders already cleaned by this process
_temps: set[Path] = set()  # temporary files this process created (some renamed since)
_held: set[Path] = set()  # claim files this process holds (refreshed by _refresher)
_held_lock = threading.Lock()
_refresher: threading.Thread | None = None


def create_temp(path: Path) -> tuple[int, Path]:
    """Create a hidden temporary file next to `path` (same folder, so the final move is atomic).

    Unlike tempfile.mkstemp (mode 0600), it gets the permissions the user's umask gives new files.
    """
    remove_stale_temps(path.parent)
    temp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{_HOST}-{secrets.token_hex(8)}"
                          f"{path.suffix}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(temp, flags, 0o666)
    except OSError as exc:
        raise LiifError(f"{path}: cannot create a file in {path.parent} "
                        f"({one_line(exc)})") from exc
    if len(_temps) > 256:  # forget those renamed into place or removed since
        _temps.difference_update([old for old in _temps if not os.path.lexists(old)])
    _temps.add(temp)
    return fd, temp


def move_into_place(temp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished temp file to `path`; without `overwrite`, never replace a file,
    and never replace a device, pipe or socket (`--json /dev/null --overwrite` as root would
    otherwise swap /dev/null for a file)."""
    if overwrite:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise LiifError(f"{path}: is not a regular file (a device, pipe or socket); not "
                            "replaced")
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # atomic "create only if absent", unlike an exists() check + rename
    except FileExistsError as exc:
        raise LiifError(f"{path}: already exists; use --overwrite to replace it") from exc
    except OSError:  # file system without hard links: check, then rename (tiny race window)
        if os.path.lexists(path):
            raise LiifError(f"{path}: already exists; use --overwrite to replace it") from None
        os.replace(temp, path)


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *,
                 overwrite: bool = True) -> None:
    """Have `write` fill a temporary file beside `path`, then move it into place, so a reader
    or a crash never meets `path` half-written; without `overwrite`, never replace a file.
    Whatever `write` raises leaves nothing behind."""
    fd, temp = create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        move_into_place(temp, path, overwrite)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str, *, overwrite: bool = True) -> None:
    """Write `text` (UTF-8) to `path` as write_atomic does."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """LiifError if `path` exists and is not a regular file (a FIFO, socket or device):
    reading a FIFO with no writer would block for ever."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise LiifError(f"{path}: is not a regular file (a pipe, socket or device); give an "
                        "image or video file")


def real_path(path: str | os.PathLike[str]) -> Path:
    """`path` absolute, with links resolved: Path.resolve() that never raises (a link loop,
    on which it raises RuntimeError before Python 3.13, is left as it stands)."""
    return Path(os.path.realpath(path))


def file_identity(path: str | os.PathLike[str]) -> object:
    """What makes two paths one file: the device and inode where `path` exists (so a hard
    link, or another spelling on a case-insensitive file system, is the same file), else its
    real path (a file yet to be written)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return real_path(path)
    if not info.st_ino:  # a file system without inode numbers (some Windows ones)
        return real_path(path)
    return (info.st_dev, info.st_ino)


def json_safe(value: object) -> Any:
    """`value` made plain for a strict JSON file: keys as strings, tuples as lists, numpy
    numbers as Python's, NaN and infinities (a PSNR of identical images) as None, and
    anything else that is not JSON (a Path, a tensor in a checkpoint's metadata) as its
    text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return str(value)


def remove_own_files() -> list[Path]:
    """Remove every temporary file this process created that is still there (not yet renamed
    into place) and release every claim it holds: the cleanup of an interrupted run, after
    its `finally` blocks (which a signal may interrupt in turn). Returns what was removed."""
    removed = [temp for temp in sorted(_temps) if _unlink(temp)]
    _temps.clear()
    with _held_lock:
        held = sorted(_held)
        _held.clear()
    removed += [path for path in held if _claim_owner(path) == (os.getpid(), _HOST)
                and _unlink(path)]
    return removed


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
    """The claim file of an output: hidden, beside it; for a name too long to take the
    claim's prefix and suffix, a digest of the name instead (every run computes the same)."""
    name = f".{target.name}{CLAIM_SUFFIX}"
    if len(os.fsencode(name)) > _NAME_MAX:
        digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:32]
        name = f".{digest}{CLAIM_SUFFIX}"
    return target.with_name(name)


def claim(target: Path) -> bool:
    """Claim `target` for this process before rendering it: True if this process now holds
    the claim (release it with `release`; it is refreshed until then), False if another run
    holds it.

    A claim of a dead process of this host, or one not refreshed for CLAIM_LEASE_S seconds,
    is removed and taken over. (Two runs meeting the same stale claim at the same instant may
    both take it over: the output is then rendered twice, still written atomically, and the
    second run finds it done.)
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
        try:
            with os.fdopen(fd, "w") as file:
                file.write(f"{os.getpid()} {_HOST}\n")
        except BaseException:  # Ctrl-C or a full disk: an unwritten claim would block for a minute
            _unlink(path)
            raise
        _hold(path)
        return True
    return False


def release(target: Path) -> None:
    """Remove this process's claim of `target` (see `claim`); never another's."""
    path = claim_path(target)
    with _held_lock:
        _held.discard(path)
    if _claim_owner(path) == (os.getpid(), _HOST):
        _unlink(path)


def _hold(path: Path) -> None:
    """Record a claim this process now holds, and make sure the lease refresher runs."""
    global _refresher
    with _held_lock:
        _held.add(path)
        if _refresher is None:
            _refresher = threading.Thread(target=_refresh_claims, name="liif-claim-lease",
                                          daemon=True)
            _refresher.start()


def _refresh_claims() -> None:
    """Touch every claim held, every CLAIM_REFRESH_S seconds, while there are any (a thread:
    a render of one big image can take far longer than the lease)."""
    global _refresher
    last = time.monotonic()
    while True:
        time.sleep(min(1.0, CLAIM_REFRESH_S))  # a second at most: soon after it is released
        if time.monotonic() - last < CLAIM_REFRESH_S:
            continue
        last = time.monotonic()
        with _held_lock:
            if not _held:
                _refresher = None
                return
            paths = list(_held)
        for path in paths:
            try:
                os.utime(path)
            except OSError:
                pass  # released meanwhile, or taken over after all


def _claim_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a claim file, or None if missing, empty or unreadable."""
    try:
        pid, host = path.read_text().split()
        return int(pid), host
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _stale_claim(path: Path) -> bool:
    """Whether the claim at `path` may be taken over: it belongs to a process of this host
    that no longer exists, or it was not refreshed for CLAIM_LEASE_S seconds (its run is gone,
    wherever it ran), or it was left empty by a writer killed before it wrote, long enough ago.
    Never one this process holds."""
    owner = _claim_owner(path)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False  # gone: claim() simply tries again
    if owner is None:
        return age > _UNWRITTEN_CLAIM_S
    if owner == (os.getpid(), _HOST):
        return False
    pid, host = owner
    return (host == _HOST and not _alive(pid)) or age > CLAIM_LEASE_S


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
