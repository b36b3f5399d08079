"""The project's one user-error type, kept apart from bugs.

``UserError`` is bad input: a file that cannot be read or says something impossible, an option out of range, a
dataset that is not where the recipe says. Its message names the file or option and the problem. The ``mobilevision``
command prints it as one line (``error: ...``) and exits with 2, as it does for :class:`ImageDecodeError` and other
``OSError`` (a missing file, a folder it may not write). Anything else that escapes a command is a bug in mobilevision:
its traceback is printed with a line saying so, and the exit code is 1.

``UserError`` subclasses ``ValueError``, so code that catches ``ValueError`` keeps working. This module imports
nothing of mobilevision: every package may use it.
"""

from __future__ import annotations

__all__ = ["ImageDecodeError", "UserError", "first_few"]


class UserError(ValueError):
    """Bad input from the user (file, option, dataset); the message names it and says what is wrong."""


class ImageDecodeError(OSError):
    """An image (or video) file exists but cannot be decoded; the message names it."""


def first_few(items, k: int = 5, sep: str = ", ", show=str) -> str:
    """The first ``k`` of ``items`` for a message, and how many more: ``"a, b, c (and 12 more)"`` (with a line
    separator, the count goes on a line of its own)."""
    items = list(items)
    if len(items) <= k:
        return sep.join(show(i) for i in items)
    return sep.join(show(i) for i in items[:k]) + (sep if "\n" in sep else " ") + f"(and {len(items) - k} more)"
