"""The project's user-error types: what the CLI prints as one line (exit 2) instead of a traceback.

A ``ValueError`` raised anywhere is not, by itself, the user's fault: a reshape bug is a
``ValueError`` too, and printing it as ``mopeft methods: error: cannot reshape array ...`` hides
the bug (and its traceback) behind what reads like a bad flag. So the CLI trusts only these types.
Raise one where the input is bad (a CLI flag, a config key, a file's content or absence) and make
the message name that flag, key or file; every other exception is a bug and keeps its traceback.

The concrete types keep the builtin base that callers (and tests) already catch: ``InputError`` is
a ``ValueError``, ``MissingInput`` a ``FileNotFoundError``. This module is the lowest layer (no
imports from the package) so that every module may raise them.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix; ``mopeft`` prints the message alone and exits 2.

    Subclass it (together with the builtin error the caller expects) rather than raising it bare,
    so that ``except ValueError`` in library callers goes on working.
    """


class InputError(UserError, ValueError):
    """A bad value in the user's input: a flag, a config value or a file's content (named)."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the user named (or that a named input points to) does not exist.

    Raised with the message alone (``MissingInput(f"{path}: not found")``), so ``str()`` is that
    message rather than ``OSError``'s ``[Errno 2] ...`` form.
    """
