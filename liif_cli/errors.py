"""The one exception type the CLI turns into a clean one-line error, and how to quote a cause."""


class LiifError(Exception):
    """A problem with the user's input (file, option, weights) rather than a bug in liif."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (for error messages that quote a cause)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# How allocators say they ran out: torch's CPU allocator, CUDA, MPS, and numpy.
_OUT_OF_MEMORY_TEXT = ("not enough memory", "DefaultCPUAllocator", "out of memory",
                       "Unable to allocate", "Failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure (MemoryError, or torch's RuntimeErrors for it)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OUT_OF_MEMORY_TEXT)
