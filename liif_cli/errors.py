"""The one exception type the CLI turns into a clean one-line error, and how to quote a cause."""


class LiifError(Exception):
    """A problem with the user's input (file, option, weights) rather than a bug in liif."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (for error messages that quote a cause)."""
    return " ".join(str(exc).split()) or type(exc).__name__
