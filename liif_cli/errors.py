"""The exception types the CLI turns into a clean one-line error, and how to quote a cause."""

from __future__ import annotations

import signal
import unicodedata


class LiifError(Exception):
    """A problem with the user's input (file, option, weights) rather than a bug in liif.

    The CLI exits 1 for it, or 2 where it was raised before any work started (see cli)."""


class UnusableInput(LiifError):
    """A LiifError found before any work started (unusable data, weights or device): the CLI
    exits 2 for it wherever it is raised, as for a usage error."""


class ArgumentError(LiifError, ValueError):
    """A bad argument to the Python API (e.g. `scale=0`, a float image in 0..255): a ValueError,
    so callers can catch it as one. (LiifError itself is not a ValueError: code that catches
    ValueError around a call raising LiifError would then rewrap liif's own messages.)"""


class OutOfMemory(LiifError):
    """Rendering an output ran out of memory (the message says what lowers memory use)."""


class Warn(str):
    """A note that warns (the file itself looks wrong, e.g. cut short): the CLI shows it even
    with --quiet."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so the
    run stops the same way: cleanup in `finally` blocks, one line, exit 130."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (for error messages that quote a cause)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# Unicode controls that reorder text (a name can hide what follows it): escaped like C0/C1.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` safe for a terminal, on one line: control characters (ESC, newline, ...),
    text-reordering controls and undecodable bytes of file names (surrogates) written as
    Python escapes (`\\x1b`, `\\n`, `\\u202e`, `\\udcff`); everything else, e.g. accents, as is.

    File names are printed through this (by the CLI's consoles), so a name holding a
    terminal escape sequence cannot clear the screen or fake a message."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS else char
        for char in text)


# How allocators say they ran out: torch's CPU allocator, CUDA, MPS, and numpy.
_OUT_OF_MEMORY_TEXT = ("not enough memory", "DefaultCPUAllocator", "out of memory",
                       "Unable to allocate", "Failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure (MemoryError, or torch's RuntimeErrors for it)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OUT_OF_MEMORY_TEXT)
