"""The one error type of data preparation, in its own module so that every helper can raise it."""

from __future__ import annotations

from mopeft.errors import InputError


class PrepareError(InputError):
    """Bad or missing raw input; the message names the file."""
