"""The one exception type the CLI turns into a clean one-line error."""


class LiifError(Exception):
    """A problem with the user's input (file, option, weights) rather than a bug in liif."""
