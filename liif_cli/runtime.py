"""What the CPU can do fast, and process-wide settings that make training and the CLI's
rendering faster.

Training allocates and frees the same few large buffers every step: the MLP's activations
for 4 neighbours x batch x 2304 queries are 19-38 MB each. glibc's malloc serves blocks over
32 MB with fresh mmap()s and hands them back to the kernel on free, so every step pays a page
fault per 4 KiB to touch them again (measured: a ReLU on a 36864x256 float32 tensor takes
15.6 ms with a fresh buffer against 2.4 ms with a reused one). `retain_freed_memory` keeps
freed memory inside the process instead, so the next step reuses it.

Rendering flushes denormal floats to zero (`flush_denormals`): the fast model's narrow
layers produce numbers below float32's smallest normal (1.2e-38) often enough that x86
handles them in microcode; on trained fast weights that made decoding 3-4x slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def retain_freed_memory() -> bool:
    """Keep freed heap memory in the process (glibc: no mmap'd blocks, no trimming).

    Peak memory is unchanged; memory freed after the peak is not returned to the OS until
    the process ends, which suits a training loop. There is no undo. Returns False where
    the C library is not glibc (nothing is changed there).
    """
    libc = _libc()
    if libc is None:
        return False
    no_mmap = libc.mallopt(_M_MMAP_MAX, 0) == 1
    no_trim = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return no_mmap and no_trim


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AMX or AVX512-BF16), read from
    /proc/cpuinfo (Linux) once per process. Elsewhere False: bf16 would be emulated, slower
    than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Within the block, CPU float arithmetic treats denormal numbers as zero (torch's
    set_flush_denormal; where the CPU cannot, nothing changes). Results move by at most
    the size of a denormal, about 1e-38. The setting before the block is restored after
    (torch has no getter for it: a denormal that reads back as zero shows it was on)."""
    import torch

    before = bool(torch.tensor([1e-40]).item() == 0.0)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
