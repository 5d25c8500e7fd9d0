"""The package's error types.

Every error convis_jax raises on purpose derives from `ConvisError`, so a
caller (and the command line) can tell a user mistake from a bug. Messages
say what was expected and what was found. Warnings go through `warn`, which
points them at the caller's line.
"""

import os
import sys
import warnings


class ConvisError(Exception):
    """Base class of every error convis_jax raises on purpose."""


class InputError(ConvisError, ValueError):
    """An image, array or argument is not what the function accepts."""


class ModelLoadError(ConvisError):
    """A checkpoint is missing, damaged, or does not match its config."""


class ConceptError(ConvisError, KeyError):
    """A concept name is unknown, not a noun synset, or outside the vocabulary."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CacheError(ConvisError):
    """A cache file is damaged or cannot be written."""


def one_line(message: str) -> str:
    """A possibly multi-line error message (a list of problems) as one line."""
    lines = [line.strip().removeprefix("- ") for line in str(message).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return "; ".join(lines)


# This package's folder: frames from files under it are the library's own.
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` pointed at the caller's line: the innermost frame outside convis_jax.

    Python shows the line a warning points at; a fixed stack level shows a line of the
    library itself whenever the call chain is deeper or shallower than foreseen.
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
